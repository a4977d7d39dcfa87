package cli

import (
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
)

// progressMinBytes is the smallest input that gets a progress bar: below
// it the bar would only flicker.
const progressMinBytes = 4 << 20

// startProgress returns a writer that counts the bytes of name (total
// bytes) into a progress bar on w, and a function that erases the bar; call
// it (more than once is fine) before printing anything else (a table, an
// error). The bar shows the
// share done, bytes in binary units, the rate and the time left. It is
// drawn only when w is a terminal, the command prints no JSON (asJSON) and
// was not told --no-progress (off), and the input is at least
// progressMinBytes; otherwise the writer discards and stop does nothing.
func startProgress(w io.Writer, name string, total int64, asJSON, off bool) (io.Writer, func()) {
	if asJSON || off || total < progressMinBytes || !isTerminal(w) {
		return io.Discard, func() {}
	}
	return newProgress(w, name, total)
}

// newProgress draws a progress bar for total bytes of name on w,
// terminal or not.
func newProgress(w io.Writer, name string, total int64) (io.Writer, func()) {
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(safeText(filepath.Base(name))),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
	)
	var once sync.Once
	return bar, func() {
		once.Do(func() {
			_ = bar.Exit()
			_ = bar.Clear()
		})
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}
