package relay

import (
	"context"
	"time"
)

// runSystem publishes system.status into room fleet every
// system_status_interval and sweeps robots not heard from for
// hub.robot_ttl, until ctx ends: the relay's own jobs, driving the hub.
func (r *Relay) runSystem(ctx context.Context) {
	sys := time.NewTicker(r.cfg.SystemStatusInterval)
	defer sys.Stop()
	sweep := time.NewTicker(min(r.cfg.Hub.RobotTTL/4, time.Minute))
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sys.C:
			r.hub.SystemStatus(r.relayStats())
		case <-sweep.C:
			r.hub.Sweep()
		}
	}
}
