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
		c        common
		items    string
		settle   time.Duration
		stranded time.Duration
		dryRun   bool
		repair   bool
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check that stock, outbox, queue and stored orders add up; repair missing and stranded orders",
		Long: `For every item, check that stock_total = stock_left + reserved in Redis, that
every reserved unit is an order in PostgreSQL, in the outbox, or in flight,
and that PostgreSQL holds no more orders than stock_total (oversold). Orders
in flight get --settle to land. A reserved unit whose order is nowhere after
that is appended to the outbox again (unless --dry-run); the worker stores an
order ref once, so a repair never makes a second order.

Orders in the outbox must move. An entry pending in the relay group
(read by a relay, not confirmed) untouched for --stranded-after while its
relay is alive (heartbeat PREFIXrelay:alive:ID present), or for
--stranded-after past the live relays' --relay-steal-after when its own relay
is dead, is stranded: a mismatch. The repair appends it again and removes
the stranded entry (XACK + XDEL) in one script. Entries older than
--stranded-after that are not stranded are waiting: a backlog (no relay
alive, or the broker down), reported apart.

Exits 0 when everything adds up, 2 on a mismatch (repaired or not), 3 when
everything adds up but orders wait in the outbox longer than
--stranded-after (relay or broker down).`,
		Example: `  seckill reconcile --settle 10s
  seckill reconcile --items 3,4 --dry-run --json --stranded-after 30s`,
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
			opt := reconcile.Options{Settle: settle, Repair: repair && !dryRun, StrandedAfter: stranded}
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
				out := map[string]any{"ok": rep.OK(), "waiting": rep.Waiting(), "report": rep}
				if rep.Waiting() > 0 {
					out["waiting_reason"] = rep.WaitingReason()
				}
				_ = enc.Encode(out)
			} else {
				reconcile.Print(stdout, rep)
			}
			if !rep.OK() {
				return exitCode(2)
			}
			if rep.Waiting() > 0 {
				return exitCode(3)
			}
			return nil
		},
	}
	fs := cmd.Flags()
	c.register(fs, getenv, "redis", "pg")
	fs.StringVar(&items, "items", "", "comma-separated item ids (all items when empty)")
	fs.DurationVar(&settle, "settle", 5*time.Second, "how long to wait for orders in flight to land before calling them missing")
	fs.DurationVar(&stranded, "stranded-after", reconcile.DefaultStrandedAfter, "an outbox entry pending this long under a live relay is stranded; older entries not stranded are waiting")
	fs.BoolVar(&dryRun, "dry-run", false, "report only; do not requeue missing orders nor hand back stranded ones")
	fs.BoolVar(&repair, "repair", true, "requeue missing orders and hand back stranded ones (the default; --repair=false is --dry-run)")
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
