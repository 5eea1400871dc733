package captcha

import (
	"math/rand/v2"
	"strconv"
	"strings"
)

var ops = [...]byte{'+', '-', '*'}

// NewMathExpression returns an expression of three one-digit operands and
// two operators among +, - and * (usual precedence), written like
// "7 + 3 * 2 = ?", and its integer answer (here 13; it may be negative).
func NewMathExpression(rng *rand.Rand) (text string, answer int) {
	a, b, c := 1+rng.IntN(9), 1+rng.IntN(9), 1+rng.IntN(9)
	o1, o2 := ops[rng.IntN(len(ops))], ops[rng.IntN(len(ops))]
	text = strconv.Itoa(a) + " " + string(o1) + " " + strconv.Itoa(b) + " " + string(o2) + " " + strconv.Itoa(c) + " = ?"
	answer, ok := evalExpression(text)
	if !ok {
		panic("captcha: generated an expression it cannot evaluate: " + text)
	}
	return text, answer
}

// evalExpression evaluates "a op b op c ... [= ?]" made of non-negative
// decimal integers and the operators +, - and * with the usual precedence.
// Spaces are ignored. It is used to compute captcha answers and, in tests,
// to evaluate what an OCR read.
func evalExpression(s string) (int, bool) {
	s = strings.Join(strings.Fields(s), "")
	if i := strings.IndexByte(s, '='); i >= 0 {
		if rest := s[i+1:]; rest != "" && rest != "?" {
			return 0, false
		}
		s = s[:i]
	}
	if s == "" || len(s) > 64 {
		return 0, false
	}
	var (
		sum  int
		term = 1
		sign = 1
		num  = -1
	)
	flush := func(op byte) bool {
		if num < 0 {
			return false
		}
		term *= num
		num = -1
		if op == '*' {
			return true
		}
		sum += sign * term
		term = 1
		if op == '-' {
			sign = -1
		} else {
			sign = 1
		}
		return true
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			if num < 0 {
				num = 0
			}
			num = num*10 + int(c-'0')
			if num > 1e6 {
				return 0, false
			}
		case c == '+' || c == '-' || c == '*':
			if !flush(c) {
				return 0, false
			}
		default:
			return 0, false
		}
	}
	if !flush('+') {
		return 0, false
	}
	return sum, true
}

// parseIntAnswer parses a captcha answer: an optional '-' and 1 to 9 ASCII
// digits, after trimming spaces.
func parseIntAnswer(s string) (int, bool) {
	s = strings.TrimSpace(s)
	neg := false
	if strings.HasPrefix(s, "-") {
		neg, s = true, s[1:]
	}
	if !isDigits(s, 9) {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}
