package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"seckill/captcha/pow"

	"github.com/spf13/cobra"
)

// solveCmd solves a proof-of-work challenge for scripts and the README's
// walkthrough: the answer of POST /api/items/{id}/challenge in, the body of
// POST /api/items/{id}/path out; or, with --username and --password, the
// answer of POST /api/register/challenge in, the body of POST /api/register
// out.
func solveCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var username, password string
	cmd := &cobra.Command{
		Use:   "solve [CHALLENGE.json]",
		Short: "Solve a proof-of-work challenge: challenge JSON in, the path (or registration) request's body out",
		Long: `Read the answer of POST /api/items/{id}/challenge (from the file, or from
standard input), solve its proof of work as the storefront does, and print the
body for POST /api/items/{id}/path: {"challenge_id": "...", "answer": "..."}.
With --username and --password, read the answer of POST /api/register/challenge
and print the body for POST /api/register (the same fields, and the username
and password). A captcha cannot be solved here (a person reads the image); an
error answer (not_live, sold_out, already_bought, rate_limited...) is reported
as such, exit status 1.`,
		Example: `  curl -s -XPOST -H "Authorization: Bearer $TOK" localhost:8080/api/items/$ID/challenge \
    | seckill solve \
    | curl -s -XPOST -H "Authorization: Bearer $TOK" localhost:8080/api/items/$ID/path -d @-
  curl -s -XPOST localhost:8080/api/register/challenge \
    | seckill solve --username ann --password 'correct horse' \
    | curl -s -XPOST localhost:8080/api/register -d @-`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in := stdin
			name := "standard input"
			if len(args) == 1 {
				f, err := os.Open(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				in, name = f, args[0]
			}
			var ch struct {
				ChallengeID string `json:"challenge_id"`
				Kind        string `json:"kind"`
				Seed        string `json:"seed"`
				Difficulty  *int   `json:"difficulty"`
				Code        string `json:"code"`
				Detail      string `json:"detail"`
				Status      int    `json:"status"`
			}
			raw, err := io.ReadAll(io.LimitReader(in, 1<<20))
			if err != nil {
				return fmt.Errorf("reading %s: %w", name, err)
			}
			if err := json.Unmarshal(raw, &ch); err != nil {
				return fmt.Errorf("reading the challenge from %s: %w (want the JSON answer of POST /api/items/{id}/challenge, got %q)", name, err, shorten(raw))
			}
			switch {
			case ch.Code != "":
				return fmt.Errorf("no challenge to solve: the request was refused with %d %s: %s", ch.Status, ch.Code, ch.Detail)
			case ch.ChallengeID == "":
				return fmt.Errorf("no challenge_id in %s: want the JSON answer of POST /api/items/{id}/challenge or /api/register/challenge", name)
			case ch.Kind == "captcha":
				return errors.New("this challenge is a captcha: a person reads the image (open it in the storefront); seckill solve solves proof of work only")
			case ch.Kind != "pow":
				return fmt.Errorf("unknown challenge kind %q", ch.Kind)
			}
			d := 0
			if ch.Difficulty != nil {
				d = *ch.Difficulty
			}
			if d < 0 || d > pow.MaxDifficulty {
				return fmt.Errorf("difficulty %d is out of range 0..%d", d, pow.MaxDifficulty)
			}
			if (username == "") != (password == "") {
				return errors.New("--username and --password go together (the body of POST /api/register)")
			}
			out, err := json.Marshal(struct {
				Username    string `json:"username,omitempty"`
				Password    string `json:"password,omitempty"`
				ChallengeID string `json:"challenge_id"`
				Answer      string `json:"answer"`
			}{username, password, ch.ChallengeID, pow.Solve(ch.Seed, d)})
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(stdout, "%s\n", out)
			return err
		},
	}
	cmd.Flags().StringVar(&username, "username", "", "with --password: print the body of POST /api/register for this account")
	cmd.Flags().StringVar(&password, "password", "", "the new account's password (with --username)")
	return cmd
}

func shorten(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "…"
	}
	return string(b)
}
