package main

// Container logs: each line is stored as "<RFC3339Nano> <stream> <text>" (like the
// CRI log format) so that since/timestamps can be answered. A file is capped at
// maxLogBytes: it is then rotated once (current.log.1), so a container uses at most
// twice that; the previous run's last file is kept as previous.log for --previous.

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/virtual-kubelet/virtual-kubelet/node/api"
)

const maxLogBytes = 10 << 20

type logFile struct {
	mu   sync.Mutex
	dir  string
	f    *os.File
	size int64
}

// openRunLog starts a new run: the last run's file becomes previous.log.
func openRunLog(dir string) (*logFile, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cur := filepath.Join(dir, "current.log")
	if _, err := os.Stat(cur); err == nil {
		_ = os.Rename(cur, filepath.Join(dir, "previous.log"))
	}
	_ = os.Remove(cur + ".1")
	f, err := os.OpenFile(cur, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return &logFile{dir: dir, f: f}, nil
}

func (l *logFile) writeLine(stream string, line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return
	}
	rec := make([]byte, 0, len(line)+48)
	rec = time.Now().UTC().AppendFormat(rec, time.RFC3339Nano)
	rec = append(rec, ' ')
	rec = append(rec, stream...)
	rec = append(rec, ' ')
	rec = append(rec, line...)
	rec = append(rec, '\n')
	if l.size+int64(len(rec)) > maxLogBytes {
		cur := filepath.Join(l.dir, "current.log")
		_ = l.f.Close()
		_ = os.Rename(cur, cur+".1")
		f, err := os.OpenFile(cur, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			l.f = nil
			return
		}
		l.f, l.size = f, 0
	}
	n, _ := l.f.Write(rec)
	l.size += int64(n)
}

func (l *logFile) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		_ = l.f.Close()
		l.f = nil
	}
}

// streamWriter splits a process's output into lines for one stream.
type streamWriter struct {
	l      *logFile
	stream string
	buf    []byte
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.l.writeLine(w.stream, w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 16<<10 { // a very long line without newline: store it in pieces
		w.l.writeLine(w.stream, w.buf)
		w.buf = nil
	}
	return len(p), nil
}

func (w *streamWriter) Flush() {
	if len(w.buf) > 0 {
		w.l.writeLine(w.stream, w.buf)
		w.buf = nil
	}
}

type logRecord struct {
	ts   time.Time
	raw  string // the whole stored line
	text string
}

func parseLogLine(s string) logRecord {
	r := logRecord{raw: s, text: s}
	i := strings.IndexByte(s, ' ')
	if i < 0 {
		return r
	}
	ts, err := time.Parse(time.RFC3339Nano, s[:i])
	if err != nil {
		return r
	}
	r.ts = ts
	rest := s[i+1:]
	if j := strings.IndexByte(rest, ' '); j >= 0 {
		r.text = rest[j+1:]
	} else {
		r.text = ""
	}
	return r
}

func formatRecord(r logRecord, timestamps bool) string {
	if timestamps && !r.ts.IsZero() {
		return r.ts.Format(time.RFC3339Nano) + " " + r.text + "\n"
	}
	return r.text + "\n"
}

// selectLogLines applies since, sinceTime and tail to the stored lines.
func selectLogLines(lines []string, opts api.ContainerLogOpts, now time.Time) []logRecord {
	var recs []logRecord
	var since time.Time
	if opts.SinceSeconds > 0 {
		since = now.Add(-time.Duration(opts.SinceSeconds) * time.Second)
	}
	if !opts.SinceTime.IsZero() && opts.SinceTime.After(since) {
		since = opts.SinceTime
	}
	for _, l := range lines {
		r := parseLogLine(l)
		if !since.IsZero() && !r.ts.IsZero() && r.ts.Before(since) {
			continue
		}
		recs = append(recs, r)
	}
	if opts.Tail > 0 && len(recs) > opts.Tail {
		recs = recs[len(recs)-opts.Tail:]
	}
	return recs
}

func readLines(paths ...string) []string {
	var out []string
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			out = append(out, sc.Text())
		}
		_ = f.Close()
	}
	return out
}

// readContainerLogs returns the log as kubectl logs wants it. With follow, it keeps
// reading current.log until ctx ends or running() says the container stopped.
func readContainerLogs(ctx context.Context, dir string, opts api.ContainerLogOpts, running func() bool) io.ReadCloser {
	pr, pw := io.Pipe()
	go func() {
		defer pw.Close()
		if opts.Previous {
			for _, r := range selectLogLines(readLines(filepath.Join(dir, "previous.log")), opts, time.Now()) {
				if _, err := io.WriteString(pw, formatRecord(r, opts.Timestamps)); err != nil {
					return
				}
			}
			return
		}
		cur := filepath.Join(dir, "current.log")
		// Read what exists, remembering how far current.log was read for follow.
		var offset int64
		var ino uint64
		if fi, err := os.Stat(cur); err == nil {
			offset = fi.Size()
			ino = inode(fi)
		}
		// Up to the size seen, so that follow continues exactly where this ends.
		lines := readLinesUpTo(cur+".1", cur, offset)
		limitBytes := opts.LimitBytes
		written := 0
		for _, r := range selectLogLines(lines, opts, time.Now()) {
			s := formatRecord(r, opts.Timestamps)
			if limitBytes > 0 && written+len(s) > limitBytes {
				s = s[:limitBytes-written]
			}
			n, err := io.WriteString(pw, s)
			written += n
			if err != nil || (limitBytes > 0 && written >= limitBytes) {
				return
			}
		}
		if !opts.Follow {
			return
		}
		var partial []byte
		for {
			fi, err := os.Stat(cur)
			if err == nil && inode(fi) != ino { // rotated: start the new file
				ino, offset = inode(fi), 0
			}
			if err == nil && fi.Size() > offset {
				f, err := os.Open(cur)
				if err == nil {
					_, _ = f.Seek(offset, io.SeekStart)
					b, _ := io.ReadAll(io.LimitReader(f, fi.Size()-offset))
					_ = f.Close()
					offset += int64(len(b))
					partial = append(partial, b...)
					for {
						i := bytes.IndexByte(partial, '\n')
						if i < 0 {
							break
						}
						r := parseLogLine(string(partial[:i]))
						partial = partial[i+1:]
						if _, err := io.WriteString(pw, formatRecord(r, opts.Timestamps)); err != nil {
							return
						}
					}
				}
				continue
			}
			if !running() {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	return pr
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

func readLinesUpTo(rotated, cur string, curSize int64) []string {
	out := readLines(rotated)
	f, err := os.Open(cur)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, curSize))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
