package config_test

import (
	"github.com/robotfleet/fleetlink/cloud/auth"
	"github.com/robotfleet/fleetlink/cloud/broker"
)

func userOf(name, pass string) broker.User { return broker.User{Username: name, Password: pass} }

func tokenOf(tok string) auth.StaticToken { return auth.StaticToken{Token: tok} }
