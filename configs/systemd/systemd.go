// Package systemd holds the systemd units of robot-agent and fleet-relay,
// the one copy that the packages install and `robot-agent install` writes.
// The .service files beside this file are the source; this package only
// embeds them.
package systemd

import _ "embed"

// AgentUnit is robot-agent.service as the package installs it: ExecStart
// runs /usr/bin/robot-agent with /etc/robot-agent/agent.yaml.
//
//go:embed robot-agent.service
var AgentUnit string

// RelayUnit is fleet-relay.service as the package installs it.
//
//go:embed fleet-relay.service
var RelayUnit string

// AgentDropIn is the documented drop-in for GPU access and exec pipelines
// (robot-agent.service.d/gpu-and-pipelines.conf), shipped as an example.
//
//go:embed robot-agent.service.d/gpu-and-pipelines.conf
var AgentDropIn string
