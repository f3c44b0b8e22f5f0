package metricshistory

import "github.com/robotfleet/fleetlink/protocol"

// Observe takes one decoded, validated event with its raw envelope, as the
// relay's ingest produces them, and keeps what the store needs of it.
func (s *Store) Observe(ev *protocol.Event, raw []byte) {
	switch ev.Type {
	case protocol.TypeRobotMetrics:
		_ = s.Metrics(ev.Robot, raw) // counted in Stats.Invalid
	case protocol.TypeRobotStatus:
		_ = s.Status(ev.Robot, raw)
	case protocol.TypeRobotAlert:
		if a, ok := ev.Data.(protocol.RobotAlert); ok {
			s.Alert(ev.Robot, a.Alert, a.State == "firing")
		}
	case protocol.TypeSessionStarted:
		s.Session(ev.Robot, ev.Session, true)
	case protocol.TypeSessionCompleted, protocol.TypeSessionFailed, protocol.TypeSessionCancelled:
		s.Session(ev.Robot, ev.Session, false)
	case protocol.TypeSessionState:
		if st, ok := ev.Data.(protocol.SessionState); ok {
			s.Session(ev.Robot, ev.Session, st.Status == protocol.StatusRunning)
		}
	}
}
