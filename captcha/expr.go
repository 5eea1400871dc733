package captcha

import (
	"math/rand/v2"
	"strconv"
	"strings"
)

// The expression space. A captcha is "X + a * b = ?", "X - a * b = ?" or
// "a * b + X = ?", X a four-digit number, a and b digits from 2 to 9: the
// answer (3984 to 10080) is typed by a person in a few seconds, and no
// answer is likelier than 1 in 9000 (TestAnswerDistribution enumerates the
// whole space). The old space, three digits and two operators, had 228
// answers, and answering 6 passed 3 % of captchas.
//
// exprChoices is the number of values of each random choice the generator
// draws, uniformly and independently: X, the form, a, b.
var exprChoices = [...]int{9000, 3, 8, 8}

// NewMathExpression returns a captcha expression, written like
// "4719 - 8 * 6 = ?", and its integer answer (here 4671).
func NewMathExpression(rng *rand.Rand) (text string, answer int) {
	var c [len(exprChoices)]int
	for i, n := range exprChoices {
		c[i] = rng.IntN(n)
	}
	return expressionOf(c)
}

// expressionOf is the expression of one draw of the choices (each c[i] in
// [0, exprChoices[i])). Tests enumerate every draw through it.
func expressionOf(c [len(exprChoices)]int) (text string, answer int) {
	x, a, b := 1000+c[0], 2+c[2], 2+c[3]
	prod := strconv.Itoa(a) + " * " + strconv.Itoa(b)
	switch c[1] {
	case 0:
		text = strconv.Itoa(x) + " + " + prod
	case 1:
		text = strconv.Itoa(x) + " - " + prod
	default:
		text = prod + " + " + strconv.Itoa(x)
	}
	text += " = ?"
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
