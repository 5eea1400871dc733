package backendclient

import (
	"context"
	"net/http"
	"strconv"

	"seckill"
)

// Enter calls POST /v1/items/{id}/entries.
func (c *Client) Enter(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	var st seckill.EntryState
	err := c.do(ctx, http.MethodPost, "/v1/items/"+strconv.FormatInt(itemID, 10)+"/entries", map[string]int64{"user_id": userID}, &st)
	return st, err
}

// Entry calls GET /v1/items/{id}/entries/{user}.
func (c *Client) Entry(ctx context.Context, itemID, userID int64) (seckill.EntryState, error) {
	var st seckill.EntryState
	err := c.do(ctx, http.MethodGet, "/v1/items/"+strconv.FormatInt(itemID, 10)+"/entries/"+strconv.FormatInt(userID, 10), nil, &st)
	return st, err
}

// Draw calls GET /v1/items/{id}/draw.
func (c *Client) Draw(ctx context.Context, itemID int64) (seckill.DrawView, error) {
	var v seckill.DrawView
	err := c.do(ctx, http.MethodGet, "/v1/items/"+strconv.FormatInt(itemID, 10)+"/draw", nil, &v)
	return v, err
}

// DrawEntries calls GET /v1/items/{id}/draw/entries.
func (c *Client) DrawEntries(ctx context.Context, itemID int64) (seckill.EntryList, error) {
	var l seckill.EntryList
	err := c.do(ctx, http.MethodGet, "/v1/items/"+strconv.FormatInt(itemID, 10)+"/draw/entries", nil, &l)
	return l, err
}
