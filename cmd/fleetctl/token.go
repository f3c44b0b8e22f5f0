package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/robotfleet/fleetlink/cloud/auth"
)

func init() {
	register(&command{
		name:    "token",
		summary: "mint a relay access token (JWT, HS256)",
		help: "Prints a JWT signed with the relay's shared secret, for a dashboard or a\n" +
			"WebSocket client. With --json prints {\"token\", \"role\", \"robots\", \"subject\", \"expires_at\"}.",
		define: defineToken,
	})
}

// tokenOut is `token --json`.
type tokenOut struct {
	Token     string    `json:"token"`
	Role      string    `json:"role"`
	Robots    []string  `json:"robots"`
	Subject   string    `json:"subject"`
	ExpiresAt time.Time `json:"expires_at"`
}

func defineToken(fs *flag.FlagSet) runFunc {
	secret := fs.String("secret", "", "HS256 secret (default: $FLEET_RELAY_AUTH_SECRET)")
	role := fs.String("role", "viewer", "viewer, operator or admin")
	robots := fs.String("robots", "*", "comma-separated robot ids or glob patterns ('*' = all)")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token")
	sub := fs.String("sub", "fleetctl", "subject (who the token is for)")
	asJSON := fs.Bool("json", false, "print the token and its claims as JSON")
	return func(_ context.Context, pos []string, stdout, _ io.Writer) error {
		if len(pos) > 0 {
			return fmt.Errorf("%w: token takes no arguments, got %q", errUsage, pos)
		}
		if *secret == "" {
			*secret = os.Getenv("FLEET_RELAY_AUTH_SECRET")
		}
		if *secret == "" {
			return fmt.Errorf("%w: --secret or FLEET_RELAY_AUTH_SECRET is required", errUsage)
		}
		r, err := auth.ParseRole(*role)
		if err != nil {
			return fmt.Errorf("%w: --role: %v", errUsage, err)
		}
		patterns := auth.SplitPatterns(*robots)
		expires := time.Now().Add(*ttl).UTC().Truncate(time.Second)
		tok, err := auth.Mint([]byte(*secret), auth.MintOptions{Subject: *sub, Role: r, Robots: patterns, TTL: *ttl})
		if err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if *asJSON {
			return writeJSON(stdout, tokenOut{Token: tok, Role: string(r), Robots: patterns, Subject: *sub, ExpiresAt: expires})
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
}
