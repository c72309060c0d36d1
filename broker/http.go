package broker

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// anyData matches a connection that has sent at least one byte. It is the HTTP/1 fallback:
// everything that is not gRPC (or claimed through Config.Mux) goes to the HTTP server, except
// a connection that stays silent until MatchTimeout, which cmux then closes.
func anyData(r io.Reader) bool {
	var b [1]byte
	n, _ := r.Read(b[:])
	return n == 1
}

// httpHandler serves /healthz and /metrics, and /debug/pprof/ if Config.Pprof is set.
func (s *Server) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if s.shuttingDown.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "shutting down\n")
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{s.log},
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      s.reg, // counts promhttp's own errors
	}))
	if s.cfg.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// promLogger adapts zerolog to promhttp.Logger.
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Error().Msg(sprintln(v...)) }

func sprintln(v ...any) string {
	var b bytes.Buffer
	log.New(&b, "", 0).Println(v...)
	return string(bytes.TrimRight(b.Bytes(), "\n"))
}

// newStdLogger returns a *log.Logger for net/http that writes through zerolog at warn level.
func newStdLogger(l zerolog.Logger) *log.Logger {
	return log.New(zerologWriter{l}, "", 0)
}

type zerologWriter struct{ log zerolog.Logger }

func (w zerologWriter) Write(p []byte) (int, error) {
	w.log.Warn().Msg(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
