package relay_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/robotfleet/fleetlink/cloud/config"
	"github.com/robotfleet/fleetlink/internal/brokertest"
	"github.com/robotfleet/fleetlink/protocol"
)

// brokers runs a test against the embedded broker and against Mosquitto.
var brokers = []struct {
	name  string
	setup func(t *testing.T, c *config.Config)
}{
	{"embedded", func(*testing.T, *config.Config) {}},
	{"mosquitto", func(t *testing.T, c *config.Config) {
		c.MQTT.Broker = brokertest.StartMosquitto(t).URL()
	}},
}

// TestRoomsRouting: every room receives what spec §5 says and nothing else.
func TestRoomsRouting(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig()
			b.setup(t, &cfg)
			r := startRelay(t, cfg)
			url := brokerURL(r, cfg)

			fleet, room1, room2, sess := connect(t, r, ""), connect(t, r, ""), connect(t, r, ""), connect(t, r, "")
			fleet.subscribe("fleet")
			room1.subscribe("robot:r-1")
			room2.subscribe("robot:r-2")
			sess.subscribe("session:s-1")

			r1, r2 := newRobot(t, url, "r-1"), newRobot(t, url, "r-2")
			st1 := r1.send("", status("online"))
			me1 := r1.send("", metrics())
			al1 := r1.send("", alert("cpu_hot", "firing"))
			no1 := r1.send("", notification("hello"))
			q1 := r1.send("s-1", queued())
			pr1 := r1.send("s-1", progress(50))
			ss1 := r1.send("s-1", sessionState(protocol.StatusRunning))
			rp1 := r1.send("", protocol.CommandReply{CommandID: protocol.NewID(), OK: true})
			q2 := r1.send("s-2", queued()) // another session of r-1
			st2 := r2.send("", status("online"))
			me2 := r2.send("", metrics())
			// Markers: the last event each room gets.
			end1 := r1.send("s-1", completed())
			end2 := r2.send("", alert("disk_full", "firing"))

			cases := []struct {
				c       *wsClient
				room    string
				markers []string
				want    []string
			}{
				{fleet, "fleet", ids(end1, end2), ids(st1, al1, q1, ss1, q2, st2, end1, end2)},
				{room1, "robot:r-1", ids(end1), ids(st1, me1, al1, no1, q1, pr1, ss1, rp1, q2, end1)},
				{room2, "robot:r-2", ids(end2), ids(st2, me2, end2)},
				{sess, "session:s-1", ids(end1), ids(q1, pr1, ss1, end1)},
			}
			for _, tc := range cases {
				seen := map[string]bool{}
				fs := tc.c.until(func(f frame) bool {
					if f.Type == "event" {
						seen[f.envelope(t).ID] = true
					}
					for _, m := range tc.markers {
						if !seen[m] {
							return false
						}
					}
					return true
				})
				for _, f := range fs {
					if f.Type == "event" {
						require.Equal(t, tc.room, f.Room, "frame room")
					}
				}
				got := eventIDs(t, fs)
				require.ElementsMatch(t, tc.want, got, "room %s", tc.room)
			}
		})
	}
}

// TestSnapshots: what each room's snapshot holds (spec §5).
func TestSnapshots(t *testing.T) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) {
			cfg := testConfig()
			b.setup(t, &cfg)
			r := startRelay(t, cfg)
			url := brokerURL(r, cfg)
			r1, r2 := newRobot(t, url, "r-1"), newRobot(t, url, "r-2")
			st1 := r1.send("", status("online"))
			r1.send("", metrics())
			me1 := r1.send("", metrics()) // latest only
			al1 := r1.send("", alert("cpu_hot", "firing"))
			r1.send("", alert("mem_low", "firing"))
			r1.send("", alert("mem_low", "resolved")) // no longer firing
			r1.send("", notification("not in snapshots"))
			q1 := r1.send("s-1", queued())
			pr1 := r1.send("s-1", progress(10))
			ss1 := r1.send("s-1", sessionState(protocol.StatusRunning))
			r1.send("s-2", queued())
			ss2 := r1.send("s-2", sessionState(protocol.StatusCompleted))
			st2 := r2.send("", status("offline"))
			c := connect(t, r, "")
			// Wait until the last event reached the hub.
			require.Eventually(t, func() bool {
				return len(c.subscribe("session:s-2").Snapshot) > 0
			}, wait, 20*time.Millisecond)

			// r-2 publishes on its own connection: wait for its status too.
			var f frame
			require.Eventually(t, func() bool {
				f = c.subscribe("fleet")
				return len(f.Snapshot) == 4
			}, wait, 20*time.Millisecond)
			require.Equal(t, ids(st1, st2, al1, ss1), snapshotIDs(t, f), "fleet: every status, then running sessions' states and firing alerts by event id")
			require.False(t, f.Recovered)

			f = c.subscribe("robot:r-1")
			require.Equal(t, ids(st1, me1, al1, ss1, ss2), snapshotIDs(t, f), "robot: status, metrics, firing alerts, session states")

			f = c.subscribe("session:s-1")
			require.Equal(t, ids(ss1, q1, pr1), snapshotIDs(t, f), "session: state then recent events")

			f = c.subscribe("robot:r-404")
			require.Empty(t, f.Snapshot)
		})
	}
}
