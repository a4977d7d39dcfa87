package audit

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

const (
	manifestName     = "manifest.json"
	maxManifestBytes = 64 << 20
	segmentSuffix    = ".ndjson"
	checksumSuffix   = ".sha256"
)

// segmentInfo is what the manifest says about one segment. For the open
// segment the counts are a checkpoint: the records durable when the
// manifest was last written; the file may hold more.
type segmentInfo struct {
	Name                  string
	Closed                bool
	FirstSeq, LastSeq     uint64 // LastSeq = FirstSeq-1 when Records == 0
	Records               uint64
	Size                  int64
	FirstMAC, LastMAC     [32]byte
	FirstEpoch, LastEpoch uint64
	FirstTime, LastTime   time.Time
	SHA256                [32]byte // closed segments only
}

// manifest lists every segment of a log, oldest first. Pruned lists the
// closed segments removed by retention; their last MAC and checksum stay so
// the chain of the remaining segments still verifies.
type manifest struct {
	Ver      int // format version of the log
	LogID    string
	Pruned   []segmentInfo
	Segments []segmentInfo
}

// segmentName returns "audit-YYYYMMDD-<first seq, 20 digits>.ndjson".
func segmentName(day time.Time, firstSeq uint64) string {
	return fmt.Sprintf("audit-%s-%020d%s", day.UTC().Format("20060102"), firstSeq, segmentSuffix)
}

// parseSegmentName returns the first sequence number a segment name claims.
func parseSegmentName(name string) (uint64, bool) {
	const n = len("audit-YYYYMMDD-00000000000000000000.ndjson")
	if len(name) != n || name[:6] != "audit-" || name[14] != '-' || name[35:] != segmentSuffix {
		return 0, false
	}
	if _, err := time.Parse("20060102", name[6:14]); err != nil {
		return 0, false
	}
	for _, c := range []byte(name[15:35]) {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	seq, err := strconv.ParseUint(name[15:35], 10, 64)
	return seq, err == nil
}

type segmentJSON struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	Records    uint64 `json:"records"`
	Size       int64  `json:"size"`
	FirstMAC   string `json:"first_mac"`
	LastMAC    string `json:"last_mac"`
	FirstEpoch uint64 `json:"first_epoch"`
	LastEpoch  uint64 `json:"last_epoch"`
	FirstTime  string `json:"first_time"`
	LastTime   string `json:"last_time"`
	SHA256     string `json:"sha256"`
}

// segmentMembers are the members every segment entry must have.
var segmentMembers = []string{"name", "state", "first_seq", "last_seq", "records", "size", "first_mac",
	"last_mac", "first_epoch", "last_epoch", "first_time", "last_time", "sha256"}

type manifestJSON struct {
	V        int           `json:"v"`
	LogID    string        `json:"log_id"`
	Genesis  string        `json:"genesis"`
	Pruned   []segmentJSON `json:"pruned"`
	Segments []segmentJSON `json:"segments"`
}

func (s *segmentInfo) toJSON() segmentJSON {
	j := segmentJSON{Name: s.Name, State: "open", FirstSeq: s.FirstSeq, LastSeq: s.LastSeq,
		Records: s.Records, Size: s.Size, FirstEpoch: s.FirstEpoch, LastEpoch: s.LastEpoch}
	if s.Closed {
		j.State = "closed"
		j.SHA256 = hexString(s.SHA256[:])
	}
	if s.Records > 0 {
		j.FirstMAC, j.LastMAC = hexString(s.FirstMAC[:]), hexString(s.LastMAC[:])
		j.FirstTime, j.LastTime = s.FirstTime.UTC().Format(timeLayout), s.LastTime.UTC().Format(timeLayout)
	}
	return j
}

func (m *manifest) encode() []byte {
	mj := manifestJSON{V: m.Ver, LogID: m.LogID, Genesis: hexString(genesis[:]),
		Pruned: []segmentJSON{}, Segments: []segmentJSON{}}
	for i := range m.Pruned {
		mj.Pruned = append(mj.Pruned, m.Pruned[i].toJSON())
	}
	for i := range m.Segments {
		mj.Segments = append(mj.Segments, m.Segments[i].toJSON())
	}
	b, err := json.MarshalIndent(mj, "", "  ")
	if err != nil {
		panic("audit: marshal manifest: " + err.Error()) // plain types only
	}
	return append(b, '\n')
}

func parseHex32(s string, dst *[32]byte) bool {
	d := dec{b: []byte(s)}
	return len(s) == 64 && d.hex32(dst)
}

func (j *segmentJSON) info() (segmentInfo, error) {
	s := segmentInfo{Name: j.Name, FirstSeq: j.FirstSeq, LastSeq: j.LastSeq, Records: j.Records,
		Size: j.Size, FirstEpoch: j.FirstEpoch, LastEpoch: j.LastEpoch}
	seq, ok := parseSegmentName(j.Name)
	if !ok {
		return s, fmt.Errorf("bad segment name %q", truncateForError(j.Name))
	}
	if seq != j.FirstSeq || j.FirstSeq == 0 {
		return s, fmt.Errorf("segment %s: first_seq %d does not match its name", j.Name, j.FirstSeq)
	}
	if j.LastSeq+1 < j.FirstSeq || j.LastSeq-j.FirstSeq+1 != j.Records {
		return s, fmt.Errorf("segment %s: records %d do not match seq %d..%d", j.Name, j.Records, j.FirstSeq, j.LastSeq)
	}
	if j.FirstSeq > maxInt || j.LastSeq > maxInt || j.LastEpoch > maxInt {
		return s, fmt.Errorf("segment %s: seq or epoch above 2^63-1", j.Name)
	}
	if j.Size < 0 || j.FirstEpoch > j.LastEpoch {
		return s, fmt.Errorf("segment %s: bad size or epochs", j.Name)
	}
	switch j.State {
	case "closed":
		s.Closed = true
		if !parseHex32(j.SHA256, &s.SHA256) {
			return s, fmt.Errorf("segment %s: bad sha256", j.Name)
		}
	case "open":
		if j.SHA256 != "" {
			return s, fmt.Errorf("segment %s: open segment with sha256", j.Name)
		}
	default:
		return s, fmt.Errorf("segment %s: bad state %q", j.Name, truncateForError(j.State))
	}
	if j.Records == 0 {
		if j.FirstMAC != "" || j.LastMAC != "" || j.FirstTime != "" || j.LastTime != "" {
			return s, fmt.Errorf("segment %s: empty segment with macs or times", j.Name)
		}
		return s, nil
	}
	if !parseHex32(j.FirstMAC, &s.FirstMAC) || !parseHex32(j.LastMAC, &s.LastMAC) {
		return s, fmt.Errorf("segment %s: bad first_mac or last_mac", j.Name)
	}
	var err1, err2 error
	s.FirstTime, err1 = time.Parse(timeLayout, j.FirstTime)
	s.LastTime, err2 = time.Parse(timeLayout, j.LastTime)
	if err1 != nil || err2 != nil || !validTime([]byte(j.FirstTime)) || !validTime([]byte(j.LastTime)) || s.LastTime.Before(s.FirstTime) {
		return s, fmt.Errorf("segment %s: bad first_time or last_time", j.Name)
	}
	return s, nil
}

// parseManifest parses a manifest strictly: version first, size cap, no
// unknown members, and every internal invariant (names, sequence
// continuity, one open segment at most and only last).
func parseManifest(b []byte) (*manifest, error) {
	if len(b) > maxManifestBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", errManifest, maxManifestBytes)
	}
	var probe struct {
		V int `json:"v"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", errManifest, err)
	}
	if probe.V != formatV1 && probe.V != formatVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", errManifest, probe.V)
	}
	var mj manifestJSON
	if err := strictJSON(b, &mj); err != nil {
		return nil, fmt.Errorf("%w: %v", errManifest, err)
	}
	var raw struct{ Pruned, Segments []json.RawMessage }
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", errManifest, err)
	}
	if err := requireMembers(b, "v", "log_id", "genesis", "pruned", "segments"); err != nil {
		return nil, fmt.Errorf("%w: %v", errManifest, err)
	}
	for _, seg := range append(raw.Pruned, raw.Segments...) {
		if err := requireMembers(seg, segmentMembers...); err != nil {
			return nil, fmt.Errorf("%w: segment: %v", errManifest, err)
		}
	}
	if len(mj.LogID) != 16 || !isLowerHex([]byte(mj.LogID)) {
		return nil, fmt.Errorf("%w: bad log_id", errManifest)
	}
	if mj.Genesis != hexString(genesis[:]) {
		return nil, fmt.Errorf("%w: genesis is not the value of versions 1 and 2", errManifest)
	}
	m := &manifest{Ver: mj.V, LogID: mj.LogID}
	next := uint64(1)
	var epoch uint64
	seen := map[string]bool{}
	all := len(mj.Pruned) + len(mj.Segments)
	for i := 0; i < all; i++ {
		var j *segmentJSON
		if i < len(mj.Pruned) {
			j = &mj.Pruned[i]
		} else {
			j = &mj.Segments[i-len(mj.Pruned)]
		}
		s, err := j.info()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", errManifest, err)
		}
		if seen[s.Name] {
			return nil, fmt.Errorf("%w: segment %s listed twice", errManifest, s.Name)
		}
		seen[s.Name] = true
		if s.FirstSeq != next {
			return nil, fmt.Errorf("%w: segment %s starts at seq %d, want %d", errManifest, s.Name, s.FirstSeq, next)
		}
		if s.FirstEpoch < epoch {
			return nil, fmt.Errorf("%w: segment %s: epochs go backwards", errManifest, s.Name)
		}
		if !s.Closed && i != all-1 {
			return nil, fmt.Errorf("%w: open segment %s is not the last", errManifest, s.Name)
		}
		if i < len(mj.Pruned) {
			if !s.Closed {
				return nil, fmt.Errorf("%w: pruned segment %s is not closed", errManifest, s.Name)
			}
			m.Pruned = append(m.Pruned, s)
		} else {
			m.Segments = append(m.Segments, s)
		}
		next, epoch = s.LastSeq+1, s.LastEpoch
	}
	return m, nil
}
