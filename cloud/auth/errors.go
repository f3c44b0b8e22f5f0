package auth

import "errors"

// Sentinel errors. Authenticate wraps them; the WebSocket layer maps them to
// HTTP 401.
var (
	// ErrNoToken: the request carried no token while auth is on.
	ErrNoToken = errors.New("no token")
	// ErrInvalidToken: the token is malformed, badly signed or unknown.
	ErrInvalidToken = errors.New("invalid token")
	// ErrExpired: the token's exp has passed.
	ErrExpired = errors.New("token expired")
	// ErrBadClaims: the token verified but its role or robots claim is unusable.
	ErrBadClaims = errors.New("bad claims")
	// ErrConfig: the auth options are inconsistent (bad key, bad pattern).
	ErrConfig = errors.New("auth config")
)
