package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
)

// csrfCookie is the cookie that binds a browser to its action tokens.
const csrfCookie = "completion_dashboard_csrf"

// csrfField is the form field that carries the token.
const csrfField = "csrf_token"

// csrfKey signs the tokens: a form's token is the HMAC of the browser's
// cookie value under the key, so a site that can set or read no cookie of
// this origin cannot make one, and one that can set a cookie (a sibling
// subdomain) still cannot make the token that goes with it.
type csrfKey []byte

// token returns the token of the browser that sent r, first giving it a
// cookie when it has none.
func (h *Handler) token(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && validCookie(c.Value) {
		return h.csrf.sign(c.Value)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	v := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, &http.Cookie{
		Name:     csrfCookie,
		Value:    v,
		Path:     h.opts.Prefix,
		HttpOnly: true,
		Secure:   r.TLS != nil,
		SameSite: http.SameSiteStrictMode,
	})
	return h.csrf.sign(v)
}

// checkToken reports whether the POST r carries the token of its cookie.
func (h *Handler) checkToken(r *http.Request) error {
	c, err := r.Cookie(csrfCookie)
	if err != nil || !validCookie(c.Value) {
		return errors.New("the request has no dashboard cookie: reload the page and try again")
	}
	got := r.PostFormValue(csrfField)
	if got == "" {
		return errors.New("the request carries no token: use the dashboard's own forms")
	}
	if !hmac.Equal([]byte(got), []byte(h.csrf.sign(c.Value))) {
		return errors.New("the request's token does not match: reload the page and try again")
	}
	return nil
}

// sign returns the token of cookie value v.
func (k csrfKey) sign(v string) string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte("completion-dashboard-csrf\x00"))
	m.Write([]byte(v))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validCookie reports whether v looks like a cookie value token made.
func validCookie(v string) bool {
	b, err := base64.RawURLEncoding.DecodeString(v)
	return err == nil && len(b) == 32
}
