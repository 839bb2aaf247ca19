package etcd

import (
	"context"
	"log/slog"
	"sync/atomic"

	"go.uber.org/zap/zapcore"
)

// slogCore forwards the embedded server's zap log lines at error level and
// above to a slog.Logger, so that the process has one log stream. Lower
// levels are dropped: etcd is chatty at info and the sidecar has its own
// view of what matters.
//
// Once closing is set (by Embedded.Close) lines go out at debug level: etcd
// reports its own listeners shutting down as errors ("http: Server closed"),
// which would alarm an operator on every clean exit. Known benign start-up
// lines are demoted the same way.
type slogCore struct {
	log     *slog.Logger
	fields  []zapcore.Field
	closing *atomic.Bool
}

// benign are etcd error lines that describe normal operation of a fresh
// single-node member.
var benign = map[string]bool{
	// A new member has no term yet; etcd retries once it has one.
	"failed to update storage version": true,
}

func newSlogCore(l *slog.Logger, closing *atomic.Bool) zapcore.Core {
	return &slogCore{log: l, closing: closing}
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.ErrorLevel }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log, closing: c.closing, fields: append(append([]zapcore.Field(nil), c.fields...), fields...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fields {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields)+1)
	attrs = append(attrs, slog.String("component", "embedded-etcd"))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	level := slog.LevelError
	if c.closing.Load() || benign[e.Message] {
		level = slog.LevelDebug
	}
	c.log.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c *slogCore) Sync() error { return nil }
