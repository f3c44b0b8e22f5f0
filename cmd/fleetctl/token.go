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
	register("token", command{summary: "mint a relay access token (JWT, HS256)", run: runToken})
}

// runToken prints a JWT signed with the relay's shared secret.
func runToken(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secret := fs.String("secret", "", "HS256 secret (default: $FLEET_RELAY_AUTH_SECRET)")
	role := fs.String("role", "viewer", "viewer, operator or admin")
	robots := fs.String("robots", "*", "comma-separated robot ids or glob patterns ('*' = all)")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token")
	sub := fs.String("sub", "fleetctl", "subject (who the token is for)")
	if err := fs.Parse(args); err != nil {
		return err
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
	tok, err := auth.Mint([]byte(*secret), auth.MintOptions{Subject: *sub, Role: r, Robots: auth.SplitPatterns(*robots), TTL: *ttl})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
