package postgres

import (
	"seckill"
	"seckill/draw"
)

func storetestID(k draw.ID, user int64) string {
	id := draw.EntryID(k, user)
	return string(id[:])
}

func roundOf(r, from, count int) seckill.DrawRound {
	return seckill.DrawRound{Round: r, From: from, Count: count}
}
