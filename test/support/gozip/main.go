// Command gozip writes etcd snapshot zips with Go's own archive/zip, called the way the real producers call
// it, so the tests read the bytes those producers write instead of a model of them:
//
//   - rke (rke-tools' backup command, its compressFiles and AddFileToZip). The zip is created in place
//     with os.Create next to the raw file; entries are named by their container paths, /backup/<name> and,
//     when the state file exists, /etc/kubernetes/<name>.rkestate; Deflate, dated time.Unix(0, 0). Errors
//     from the deferred zip.Writer.Close and File.Close are ignored, so a zip cut in its last bytes counts
//     as a success.
//   - k3s (its compressSnapshot). One entry named <name>, Deflate, dated with
//     the snapshot time; the zip is removed only when opening the raw file or writing the header fails.
//
// The test-only parts sit between zip.Writer and the file (a disk that fills up, a pause point) or before it
// (--offset); the zip.Writer calls themselves are the producers'.
//
// Usage:
//
//	gozip rke [options] OUT.zip RAWFILE [RKESTATE]
//	gozip k3s [options] OUT.zip RAWFILE
//	gozip list ZIP
//
// Exit status: 0 when the producer would have seen success, 1 when it would have seen its compression fail
// (the reason on stderr), 2 for a usage error. `list` prints, as JSON, what Go's archive/zip reader finds.
package main

import (
	"archive/zip"
	"bufio"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

type options struct {
	name       string
	mtime      int64
	truncateAt int64
	pauseAt    int64
	offset     int64
	finish     bool
}

// disk is the file as the producer's zip.Writer sees it, with the two faults tests need. zip.Writer wraps
// whatever it is given in a 4 KiB bufio.Writer, so the write sizes reaching the file are the producers'.
type disk struct {
	f       *os.File
	written int64
	fullAt  int64 // -1: the disk never fills
	pauseAt int64 // -1: never pause
	paused  bool
	stdin   *bufio.Reader
}

func (d *disk) Write(p []byte) (int, error) {
	want := p
	full := false
	if d.fullAt >= 0 && d.written+int64(len(p)) > d.fullAt {
		// The kernel takes what fits; os.File.Write then reports ENOSPC for the rest, as here.
		want = p[:d.fullAt-d.written]
		full = true
	}
	n, err := d.f.Write(want)
	d.written += int64(n)
	if err == nil && full {
		err = &fs.PathError{Op: "write", Path: d.f.Name(), Err: syscall.ENOSPC}
	}
	if d.pauseAt >= 0 && !d.paused && d.written >= d.pauseAt {
		d.paused = true
		// The bytes are in the file before the test hears of the pause: it sees what a reader would.
		fmt.Printf("paused %d\n", d.written)
		_, _ = d.stdin.ReadString('\n') // a line or EOF resumes
	}
	return n, err
}

// create opens OUT as the producers do (os.Create: truncate, mode 0666 before umask) and hands the
// zip.Writer its test-only view of it.
func create(out string, o options) (*os.File, *disk, error) {
	f, err := os.Create(out)
	if err != nil {
		return nil, nil, err
	}
	if o.offset > 0 {
		// A hole before the zip: zip.Writer.SetOffset (Go's way to append a zip to other data) then records
		// offsets past 4 GiB with its Zip64 extras and end records, without 4 GiB being written.
		if _, err := f.Seek(o.offset, io.SeekStart); err != nil {
			f.Close()
			return nil, nil, err
		}
	}
	return f, &disk{f: f, fullAt: o.truncateAt, pauseAt: o.pauseAt, stdin: bufio.NewReader(os.Stdin)}, nil
}

func newWriter(d *disk, o options) *zip.Writer {
	w := zip.NewWriter(d)
	if o.offset > 0 {
		w.SetOffset(o.offset)
	}
	return w
}

type input struct {
	name string // entry name
	path string // where the bytes come from on this machine
}

// compressRKE follows rke-tools' compressFiles: create, one writer, entries in order, Close errors dropped.
func compressRKE(out string, files []input, o options) error {
	zipFile, d, err := create(out, o)
	if err != nil {
		return err
	}
	defer zipFile.Close()
	zipWriter := newWriter(d, o)
	defer zipWriter.Close()
	for _, in := range files {
		if err := addRKE(zipWriter, in); err != nil {
			return err
		}
	}
	return nil
}

// addRKE follows rke-tools' AddFileToZip: the header from the file's FileInfo, then the container path as the
// name, Deflate and the Unix epoch as the time.
func addRKE(w *zip.Writer, in input) error {
	f, err := os.Open(in.path)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	header, err := zip.FileInfoHeader(info)
	if err != nil {
		return err
	}
	header.Name = in.name
	header.Method = zip.Deflate
	header.Modified = time.Unix(0, 0)
	ew, err := w.CreateHeader(header)
	if err != nil {
		return err
	}
	_, err = io.Copy(ew, f)
	return err
}

func runRKE(out, raw, state string, o options) int {
	name := o.name
	if name == "" {
		name = filepath.Base(raw)
	}
	files := []input{{name: "/backup/" + name, path: raw}}
	// rke-tools adds the state file only when it exists.
	if state != "" {
		if _, err := os.Stat(state); err == nil {
			files = append(files, input{name: "/etc/kubernetes/" + name + ".rkestate", path: state})
		}
	}
	if err := compressRKE(out, files, o); err != nil {
		fmt.Fprintf(os.Stderr, "Compressing backup failed: %v\n", err)
		// rke-tools keeps the raw file and the state file and leaves the zip as it is.
		return 1
	}
	if o.finish {
		// After a compression it believes good: remove the raw file, then the state file, then chmod the zip.
		if err := os.Remove(raw); err != nil {
			fmt.Fprintf(os.Stderr, "Removing uncompressed snapshot file failed: %v\n", err)
			return 1
		}
		if state != "" {
			if _, err := os.Stat(state); err == nil {
				_ = os.Remove(state)
			}
		}
		if err := os.Chmod(out, 0o600); err != nil {
			fmt.Fprintf(os.Stderr, "changing permission of the compressed snapshot failed: %v\n", err)
			return 1
		}
	}
	return 0
}

// compressK3s follows k3s' compressSnapshot, including which failures remove the zip.
func compressK3s(out, raw, name string, now time.Time, o options) error {
	zf, d, err := create(out, o)
	if err != nil {
		return err
	}
	defer zf.Close()
	zipWriter := newWriter(d, o)
	defer zipWriter.Close()

	fileToZip, err := os.Open(raw)
	if err != nil {
		os.Remove(out)
		return err
	}
	defer fileToZip.Close()
	info, err := fileToZip.Stat()
	if err != nil {
		os.Remove(out)
		return err
	}
	header, err := zip.FileInfoHeader(info)
	if err != nil {
		os.Remove(out)
		return err
	}
	header.Name = name
	header.Method = zip.Deflate
	header.Modified = now
	ew, err := zipWriter.CreateHeader(header)
	if err != nil {
		os.Remove(out)
		return err
	}
	_, err = io.Copy(ew, fileToZip)
	return err
}

func runK3s(out, raw string, o options) int {
	name := o.name
	if name == "" {
		name = filepath.Base(raw)
	}
	// k3s stamps the entry with the snapshot's time, rounded to the second (its name ends with it).
	now := time.Now().Round(time.Second)
	if o.mtime >= 0 {
		now = time.Unix(o.mtime, 0)
	}
	err := compressK3s(out, raw, name, now, o)
	if o.finish {
		// k3s removes the raw snapshot whether or not the compression worked.
		if rerr := os.Remove(raw); rerr != nil && !os.IsNotExist(rerr) {
			fmt.Fprintf(os.Stderr, "Failed to remove uncompress snapshot file: %v\n", rerr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "failed to compress snapshot: %v\n", err)
		return 1
	}
	return 0
}

type listed struct {
	Name             string `json:"name"`
	Method           uint16 `json:"method"`
	Flags            uint16 `json:"flags"`
	CRC32            uint32 `json:"crc32"`
	CompressedSize   uint64 `json:"compressedSize"`
	UncompressedSize uint64 `json:"uncompressedSize"`
	DataOffset       int64  `json:"dataOffset"`
	Modified         int64  `json:"modified"`
	ReaderVersion    uint16 `json:"readerVersion"`
	CreatorVersion   uint16 `json:"creatorVersion"`
	ExternalAttrs    uint32 `json:"externalAttrs"`
	Extra            string `json:"extra"`
	// "ok" when the whole entry inflated and its CRC-32 matched, else Go's error.
	Read string `json:"read"`
}

// runList prints what Go's archive/zip reader makes of a zip: an independent reading to compare ours with.
func runList(path string) int {
	r, err := zip.OpenReader(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n", err)
		return 1
	}
	defer r.Close()
	entries := []listed{}
	for _, f := range r.File {
		off, err := f.DataOffset()
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", f.Name, err)
			return 1
		}
		e := listed{
			Name: f.Name, Method: f.Method, Flags: f.Flags, CRC32: f.CRC32,
			CompressedSize: f.CompressedSize64, UncompressedSize: f.UncompressedSize64, DataOffset: off,
			Modified: f.Modified.Unix(), ReaderVersion: f.ReaderVersion, CreatorVersion: f.CreatorVersion,
			ExternalAttrs: f.ExternalAttrs, Extra: hex.EncodeToString(f.Extra), Read: "ok",
		}
		if rc, err := f.Open(); err != nil {
			e.Read = err.Error()
		} else {
			if _, err := io.Copy(io.Discard, rc); err != nil {
				e.Read = err.Error()
			}
			rc.Close()
		}
		entries = append(entries, e)
	}
	out, _ := json.Marshal(map[string]any{"entries": entries})
	fmt.Println(string(out))
	return 0
}

func usage() int {
	fmt.Fprint(os.Stderr, `usage:
  gozip rke [options] OUT.zip RAWFILE [RKESTATE]
  gozip k3s [options] OUT.zip RAWFILE
  gozip list ZIP
options (rke, k3s):
  --name NAME       snapshot name in the entry names (default: RAWFILE's base name)
  --mtime SECONDS   k3s: the entry's time (default: now, rounded to the second)
  --truncate-at N   the disk is full after N bytes of zip: later writes fail with ENOSPC
  --pause-at N      once N bytes are written, print "paused <bytes>" and wait for a line on stdin
  --offset N        start the zip N bytes into OUT, after a hole (Go's Zip64 offset records, cheaply)
  --finish          then do what the producer does next: rke removes RAWFILE and RKESTATE and chmods the
                    zip 0600 after a success; k3s removes RAWFILE whatever happened
`)
	return 2
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) < 1 {
		return usage()
	}
	kind := args[0]
	if kind == "list" {
		if len(args) != 2 {
			return usage()
		}
		return runList(args[1])
	}
	if kind != "rke" && kind != "k3s" {
		return usage()
	}
	fl := flag.NewFlagSet(kind, flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	var o options
	fl.StringVar(&o.name, "name", "", "")
	fl.Int64Var(&o.mtime, "mtime", -1, "")
	fl.Int64Var(&o.truncateAt, "truncate-at", -1, "")
	fl.Int64Var(&o.pauseAt, "pause-at", -1, "")
	fl.Int64Var(&o.offset, "offset", 0, "")
	fl.BoolVar(&o.finish, "finish", false, "")
	if err := fl.Parse(args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "gozip: %v\n", err)
		return usage()
	}
	if o.offset < 0 {
		fmt.Fprintln(os.Stderr, "gozip: --offset must not be negative")
		return 2
	}
	pos := fl.Args()
	switch {
	case kind == "rke" && (len(pos) == 2 || len(pos) == 3):
		state := ""
		if len(pos) == 3 {
			state = pos[2]
		}
		return runRKE(pos[0], pos[1], state, o)
	case kind == "k3s" && len(pos) == 2:
		return runK3s(pos[0], pos[1], o)
	}
	return usage()
}
