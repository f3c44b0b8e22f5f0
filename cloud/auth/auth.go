// Package auth authenticates the relay's dashboard clients: JWTs signed with
// HS256 (shared secret) or RS256/ES256 (public key), and static tokens from
// the config for small deployments. A token carries a role (viewer, operator,
// admin) and a robots claim (ids or glob patterns) that limit what its
// holder may subscribe to and command (spec §5).
package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Role is a token's role.
type Role string

// The roles of spec §5, weakest first.
const (
	RoleViewer   Role = "viewer"   // subscribe
	RoleOperator Role = "operator" // viewer + command
	RoleAdmin    Role = "admin"    // everything
)

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleViewer, RoleOperator, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("%w: role %q must be viewer, operator or admin", ErrBadClaims, s)
}

// CheckPatterns checks robot patterns: each an id or a glob (path.Match
// syntax; '*' alone means every robot).
func CheckPatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return fmt.Errorf("%w: empty robot pattern", ErrBadClaims)
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("%w: robot pattern %q: %v", ErrBadClaims, p, err)
		}
	}
	return nil
}

// Principal is an authenticated client.
type Principal struct {
	Subject   string
	Role      Role
	Robots    []string  // ids or glob patterns; "*" is every robot
	ExpiresAt time.Time // zero when the token never expires
}

// Anonymous is the principal of every client when auth is off.
func Anonymous() *Principal {
	return &Principal{Subject: "anonymous", Role: RoleAdmin, Robots: []string{"*"}}
}

// AllRobots reports whether the robots claim covers every robot, which
// spec §5 requires to subscribe to a session the relay has not seen.
func (p *Principal) AllRobots() bool {
	for _, r := range p.Robots {
		if r == "*" {
			return true
		}
	}
	return false
}

// CanRobot reports whether the robots claim covers robot id.
func (p *Principal) CanRobot(id string) bool {
	for _, pat := range p.Robots {
		if pat == "*" || pat == id {
			return true
		}
		if ok, _ := path.Match(pat, id); ok {
			return true
		}
	}
	return false
}

// CanCommand reports whether the role may send commands.
func (p *Principal) CanCommand() bool { return p.Role == RoleOperator || p.Role == RoleAdmin }

// RobotList is the robots claim: a JSON list of patterns, or one string
// (comma-separated patterns) for hand-made tokens.
type RobotList []string

// UnmarshalJSON accepts ["r-1","r-*"] or "r-1,r-*".
func (l *RobotList) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = SplitPatterns(s)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("robots must be a list of strings or a string: %w", err)
	}
	*l = list
	return nil
}

// SplitPatterns splits "r-1, r-*" into its patterns.
func SplitPatterns(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Claims are the JWT claims the relay reads.
type Claims struct {
	Role   string    `json:"role"`
	Robots RobotList `json:"robots"`
	jwt.RegisteredClaims
}

// StaticToken is one token listed in the config.
type StaticToken struct {
	// Token is the secret string clients present.
	Token string `yaml:"token"`
	// Subject names the holder in logs. Default "static".
	Subject string `yaml:"sub"`
	// Role is viewer, operator or admin. Default viewer.
	Role string `yaml:"role"`
	// Robots are ids or glob patterns. Default ["*"].
	Robots []string `yaml:"robots"`
}

// Options configures an Authenticator. Auth is on when any of Secret,
// PublicKeyPEM or StaticTokens is set.
type Options struct {
	// Secret verifies HS256 tokens. Default none.
	Secret []byte
	// PublicKeyPEM verifies RS256 (RSA key) or ES256 (EC P-256 key) tokens.
	// Default none.
	PublicKeyPEM []byte
	// StaticTokens are accepted as they are. Default none.
	StaticTokens []StaticToken
	// Leeway tolerated on exp/nbf for clock skew. Default 0.
	Leeway time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Authenticator checks tokens. It is safe for concurrent use.
type Authenticator struct {
	secret  []byte
	pubKey  any // *rsa.PublicKey or *ecdsa.PublicKey
	method  string
	static  []staticEntry
	parser  *jwt.Parser
	enabled bool
	now     func() time.Time
}

type staticEntry struct {
	token []byte
	p     Principal
}

// New returns an Authenticator, or an error naming the bad option.
func New(o Options) (*Authenticator, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	a := &Authenticator{secret: o.Secret, now: o.Now}
	var methods []string
	if len(o.Secret) > 0 {
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if len(o.PublicKeyPEM) > 0 {
		if k, err := jwt.ParseRSAPublicKeyFromPEM(o.PublicKeyPEM); err == nil {
			a.pubKey, a.method = k, jwt.SigningMethodRS256.Alg()
		} else if k, err := jwt.ParseECPublicKeyFromPEM(o.PublicKeyPEM); err == nil {
			a.pubKey, a.method = k, jwt.SigningMethodES256.Alg()
		} else {
			return nil, fmt.Errorf("%w: public key: not an RSA or EC public key in PEM form", ErrConfig)
		}
		methods = append(methods, a.method)
	}
	for i, st := range o.StaticTokens {
		if st.Token == "" {
			return nil, fmt.Errorf("%w: static_tokens[%d].token: is required", ErrConfig, i)
		}
		p := Principal{Subject: st.Subject, Role: RoleViewer, Robots: st.Robots}
		if p.Subject == "" {
			p.Subject = "static"
		}
		if st.Role != "" {
			r, err := ParseRole(st.Role)
			if err != nil {
				return nil, fmt.Errorf("%w: static_tokens[%d].role: %v", ErrConfig, i, err)
			}
			p.Role = r
		}
		if len(p.Robots) == 0 {
			p.Robots = []string{"*"}
		}
		if err := CheckPatterns(p.Robots); err != nil {
			return nil, fmt.Errorf("%w: static_tokens[%d].robots: %v", ErrConfig, i, err)
		}
		a.static = append(a.static, staticEntry{token: []byte(st.Token), p: p})
	}
	a.enabled = len(methods) > 0 || len(a.static) > 0
	a.parser = jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithLeeway(o.Leeway),
		jwt.WithTimeFunc(o.Now), jwt.WithExpirationRequired())
	return a, nil
}

// Enabled reports whether auth is on. When it is off every client is
// Anonymous.
func (a *Authenticator) Enabled() bool { return a.enabled }

// Authenticate returns the principal of token.
func (a *Authenticator) Authenticate(token string) (*Principal, error) {
	if !a.enabled {
		return Anonymous(), nil
	}
	if token == "" {
		return nil, ErrNoToken
	}
	for i := range a.static {
		if subtle.ConstantTimeCompare(a.static[i].token, []byte(token)) == 1 {
			p := a.static[i].p
			return &p, nil
		}
	}
	if a.secret == nil && a.pubKey == nil {
		return nil, fmt.Errorf("%w: not a configured static token", ErrInvalidToken)
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		switch t.Method.(type) {
		case *jwt.SigningMethodHMAC:
			if a.secret == nil {
				return nil, errors.New("HS256 is not configured")
			}
			return a.secret, nil
		case *jwt.SigningMethodRSA:
			if k, ok := a.pubKey.(*rsa.PublicKey); ok {
				return k, nil
			}
		case *jwt.SigningMethodECDSA:
			if k, ok := a.pubKey.(*ecdsa.PublicKey); ok {
				return k, nil
			}
		}
		return nil, fmt.Errorf("signing method %q is not configured", t.Method.Alg())
	})
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, fmt.Errorf("%w: %v", ErrExpired, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	role, err := ParseRole(c.Role)
	if err != nil {
		return nil, err
	}
	if len(c.Robots) == 0 {
		return nil, fmt.Errorf("%w: robots claim is required (use \"*\" for every robot)", ErrBadClaims)
	}
	if err := CheckPatterns(c.Robots); err != nil {
		return nil, err
	}
	p := &Principal{Subject: c.Subject, Role: role, Robots: c.Robots}
	if c.ExpiresAt != nil {
		p.ExpiresAt = c.ExpiresAt.Time
	}
	return p, nil
}

// FromRequest returns the token of an HTTP request: the Authorization
// Bearer header, else the token query parameter (browsers cannot set
// headers on a WebSocket).
func FromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(tok)
		}
		if tok, ok := strings.CutPrefix(h, "bearer "); ok {
			return strings.TrimSpace(tok)
		}
	}
	return r.URL.Query().Get("token")
}

// MintOptions describes a token to mint.
type MintOptions struct {
	Subject string        // default "fleetctl"
	Role    Role          // required
	Robots  []string      // required; ["*"] for every robot
	TTL     time.Duration // required, > 0
	Now     time.Time     // default time.Now()
}

// Mint returns an HS256 JWT signed with secret.
func Mint(secret []byte, o MintOptions) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("mint token: %w: secret is empty", ErrConfig)
	}
	if _, err := ParseRole(string(o.Role)); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	if len(o.Robots) == 0 {
		return "", fmt.Errorf("mint token: %w: robots is empty (use \"*\" for every robot)", ErrBadClaims)
	}
	if err := CheckPatterns(o.Robots); err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	if o.TTL <= 0 {
		return "", fmt.Errorf("mint token: %w: ttl must be > 0, got %s", ErrBadClaims, o.TTL)
	}
	if o.Subject == "" {
		o.Subject = "fleetctl"
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	c := Claims{Role: string(o.Role), Robots: o.Robots, RegisteredClaims: jwt.RegisteredClaims{
		Subject:   o.Subject,
		IssuedAt:  jwt.NewNumericDate(o.Now),
		ExpiresAt: jwt.NewNumericDate(o.Now.Add(o.TTL)),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

type principalKey struct{}

// NewContext returns ctx carrying p (set by the relay's HTTP auth middleware).
func NewContext(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal NewContext stored in ctx.
func FromContext(ctx context.Context) (*Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(*Principal)
	return p, ok && p != nil
}
