package edge

import "seckill"

// checkEligible is the edge's check of an item's eligibility rules
// (min_account_age, max_per_network; issue 15) for a session: 409
// not_eligible for a session whose token does not say when its account was
// made (signed before the claims existed, or an admin session) when the
// item has rules, and for an account younger than min_account_age when the
// sale opens. It reads only the signed session and the catalogue copy: no
// I/O. The per-network count is checked where units are taken (the
// reservation script), so a buy can still get not_eligible from the
// backend.
//
// Every route that lets a user take part in a sale calls it: challenge and
// buy, and the waiting room and draw entry routes.
func (e *Edge) checkEligible(ses Session, it seckill.Item) error {
	return seckill.CheckEligible(it, ses.Account())
}
