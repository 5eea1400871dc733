package main

import (
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"seckill/postgres"
	"seckill/reconcile"
	"seckill/stock"
)

func reconcileCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var (
		c      common
		items  string
		settle time.Duration
		dryRun bool
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check that stock, outbox, queue and stored orders add up; repair missing orders",
		Long: `For every item, check that stock_total = stock_left + reserved in Redis, and
that every reserved unit is an order in PostgreSQL, in the outbox, or in
flight. Orders in flight get --settle to land. A reserved unit whose order is
nowhere after that is appended to the outbox again (unless --dry-run); the
worker stores an order ref once, so a repair never makes a second order.

Exits 0 when everything adds up, 2 on a mismatch (repaired or not).`,
		Example: `  seckill reconcile --settle 10s
  seckill reconcile --items 3,4 --dry-run --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			db, err := postgres.Open(ctx, c.PGURL)
			if err != nil {
				return err
			}
			defer db.Close()
			rdb, err := c.redisClient()
			if err != nil {
				return err
			}
			defer rdb.Close()
			opt := reconcile.Options{Settle: settle, Repair: !dryRun}
			for _, s := range splitList(items) {
				id, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return err
				}
				opt.Items = append(opt.Items, id)
			}
			rep, err := reconcile.Run(ctx, db, stock.New(rdb, c.RedisPrefix), opt)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(stdout)
				enc.SetIndent("", "  ")
				_ = enc.Encode(map[string]any{"ok": rep.OK(), "report": rep})
			} else {
				reconcile.Print(stdout, rep)
			}
			if !rep.OK() {
				return exitCode(2)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "pg")
	fs.StringVar(&items, "items", "", "comma-separated item ids (all items when empty)")
	fs.DurationVar(&settle, "settle", 5*time.Second, "how long to wait for orders in flight to land before calling them missing")
	fs.BoolVar(&dryRun, "dry-run", false, "report only; do not requeue missing orders")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func migrateCmd(getenv func(string) string, stdout, stderr io.Writer) *cobra.Command {
	var c common
	cmd := &cobra.Command{
		Use:     "migrate",
		Short:   "Apply the embedded PostgreSQL migrations and exit",
		Long:    "Apply the embedded PostgreSQL migrations and exit. Every part also applies them at start; this is for deploy pipelines.",
		Example: "  seckill migrate --pg-url 'postgres://postgres@127.0.0.1:5432/seckill?sslmode=disable'",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			db, err := postgres.Open(cmd.Context(), c.PGURL)
			if err != nil {
				return err
			}
			db.Close()
			_, err = io.WriteString(stdout, "migrations applied\n")
			return err
		},
	}
	c.register(cmd.Flags(), getenv, "pg")
	return cmd
}
