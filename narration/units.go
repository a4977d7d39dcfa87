package narration

import (
	"time"

	"github.com/vramseal/vramseal/internal/units"
)

// FormatBytes renders a byte count in binary units with one decimal
// ("1.5 GiB", "512 B"): the one size format of sentences, tables, errors
// and audit query output.
func FormatBytes(n int64) string { return units.FormatBytes(n) }

// FormatDuration renders a duration for people with three significant
// digits below a minute and two fields above it ("850ns", "850µs",
// "12.3ms", "1.52s", "3m04s", "2h05m", "3d04h"): the one duration format of
// sentences, console lines, tables, errors and audit query output. A
// duration that is not zero is never written as zero.
func FormatDuration(d time.Duration) string { return units.FormatDuration(d) }
