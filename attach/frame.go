package attach

// Frame size limits, in bytes of JSON after the 4-byte length.
const (
	// MaxRequestFrame is the longest request a daemon reads.
	MaxRequestFrame = 4 << 10
	// MaxResponseFrame is the longest answer or push a client reads; the
	// tensor map of a large shard is the biggest member.
	MaxResponseFrame = 16 << 20
	// Version is the protocol version, the "v" member of every frame.
	Version = 1
)
