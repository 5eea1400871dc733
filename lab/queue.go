package lab

import (
	"context"
	"net/http"
	"time"

	"seckill"
)

// QueueSpec makes the scenario's sale a waiting room (allocation queue,
// issue 16). The waiting room opens when the lab's sale "starts" (the
// instant every arrival is counted from); the sale itself starts PreQueue
// later, so everyone who arrives within PreQueue draws a random place.
type QueueSpec struct {
	PreQueue          time.Duration `yaml:"pre_queue"`
	NewUsersPerMinute int64         `yaml:"new_users_per_minute"`
	TotalActiveUsers  int64         `yaml:"total_active_users"`
	SessionDuration   time.Duration `yaml:"session_duration"`
	// AbandonAfter: a ticket not polled this long is dropped (0: the
	// edge's default, 5 min).
	AbandonAfter time.Duration `yaml:"abandon_after"`
	// PollRate is the edge's --queue-poll-rate the scenario is meant to
	// run against (0: the edge's default, 2,000 polls/s): the report
	// compares the polls the lab sent with it. The lab cannot read it
	// from the edge.
	PollRate int `yaml:"poll_rate"`
}

// pollRate is PollRate with the edge's default.
func (q *QueueSpec) pollRate() int {
	if q.PollRate > 0 {
		return q.PollRate
	}
	return 2000 // edge.DefaultQueuePollRate (the lab does not import the edge)
}

// rules are the sale rules of the waiting room opening at opens.
func (q *QueueSpec) rules(opens time.Time) seckill.SaleRules {
	return seckill.SaleRules{
		Allocation: seckill.AllocationQueue, QueueOpensAt: opens.UTC(),
		NewUsersPerMinute: q.NewUsersPerMinute, TotalActiveUsers: q.TotalActiveUsers,
		SessionDuration: seckill.Duration(q.SessionDuration), AbandonAfter: seckill.Duration(q.AbandonAfter),
	}
}

// admitted reports whether a holds an admission pass for this sale (item:
// its URL) that is still valid.
func (a *actor) admitted(item string) bool {
	return a.pass != "" && a.passItem == item && time.Now().Before(a.passUntil)
}

// waitTurn joins the sale's waiting room (the same ticket when already in
// it) and polls it until a is admitted: it returns "" with a.pass set, or
// the outcome that ends a's play. Honest users poll at poll_after; bots no
// slower than every 200 ms (it buys them nothing: places are drawn at
// random before the start and admission follows them).
func (r *runner) waitTurn(ctx context.Context, a *actor) string {
	after := queueRetryWait // before the first answer
	if a.kind != Honest {
		after = 200 * time.Millisecond
	}
	rep := r.queueCall(ctx, a, "queue_join", http.MethodPost, after)
	for {
		switch {
		case rep.err != nil:
			return "stopped"
		case rep.status == http.StatusOK:
		case rep.code() == "sold_out":
			return "sold_out"
		case rep.code() == "not_eligible":
			r.refuse(a, rep.code())
			return "not_eligible"
		case rep.code() == "not_found": // dropped: join again
			rep = r.queueCall(ctx, a, "queue_join", http.MethodPost, after)
			continue
		default:
			return "queue_" + rep.code()
		}
		if t := rep.str("poll_token"); t != "" {
			a.pollToken = t
		}
		switch rep.str("state") {
		case "admitted":
			a.pass, a.passItem = rep.str("pass"), r.itemURL
			a.passUntil, _ = time.Parse(time.RFC3339Nano, rep.str("admitted_until"))
			if a.kind == Honest {
				r.mu.Lock()
				r.admits = append(r.admits, time.Since(r.startAt))
				r.mu.Unlock()
			}
			return ""
		case "bought":
			return "" // the challenge answers already_bought
		case "sold_out":
			return "sold_out"
		case "expired":
			rep = r.queueCall(ctx, a, "queue_join", http.MethodPost, after)
			continue
		}
		wait := time.Duration(rep.num("poll_after") * float64(time.Second))
		if a.kind != Honest {
			wait = min(wait, 200*time.Millisecond)
		}
		wait = max(wait, 50*time.Millisecond)
		after = wait
		if !sleep(ctx, wait) {
			return "stopped"
		}
		rep = r.queueCall(ctx, a, "queue_poll", http.MethodGet, after)
	}
}

// queueRetryWait is how long a client waits after a transport failure of
// its first waiting-room request (the storefront's poll loop: 5 s without
// a ticket).
const queueRetryWait = 5 * time.Second

// queueCall sends one waiting-room request (join or poll) as the
// storefront's queue.js does: after a 429 or 503 it waits Retry-After and
// asks again, after 409 not_live a moment; after a transport failure (a
// timeout) it waits after (the last poll_after) before asking again, not a
// fixed 100 ms as retrying does: 100,000 clients retrying timed-out polls
// at once would multiply the polls of a room whose edge is already slow.
// It gives up after 20 transport failures in a row or when ctx ends (err
// set then).
func (r *runner) queueCall(ctx context.Context, a *actor, route, method string, after time.Duration) reply {
	return r.retryingWith(ctx, a, route, method, r.itemURL+"/queue", nil, func(int) time.Duration { return after })
}
