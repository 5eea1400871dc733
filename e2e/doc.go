// Package e2e holds the end-to-end tests of the purchase core: the whole
// path from reservation to PostgreSQL on the real servers, and the fault
// tests that kill processes and stop brokers. It has no non-test code.
package e2e
