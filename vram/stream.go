package vram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/vramseal/vramseal/gpu"
	"github.com/vramseal/vramseal/seal"
	"github.com/vramseal/vramseal/tensor"
)

// streamer copies a shard into a device buffer while hashing it. Each
// batch (a whole number of chunks, at most copyBufferSize bytes) is
// written to the device on one goroutine while the calling goroutine
// hashes it: the flat digest here, leaves on the Hasher's workers.
type streamer struct {
	ctx  context.Context
	dev  *deviceState
	buf  gpu.Buffer
	h    *seal.Hasher
	size int64
	off  int64
	// batch is the largest slice handed to feed at once.
	batch    int64
	writeErr chan error
	header   *headerCapture
}

// feed writes p (at most s.batch bytes) to the device at s.off and hashes
// it. It returns once both are done, so the caller may reuse p.
func (s *streamer) feed(p []byte) error {
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("vram: seal interrupted after %d of %d bytes: %w", s.off, s.size, err)
	}
	if int64(len(p)) > s.size-s.off {
		return invalid("shard data is longer than the announced %d bytes", s.size)
	}
	off := s.off
	go func() { s.writeErr <- s.dev.dev.Write(s.ctx, s.buf, off, p) }()
	s.header.add(off, p)
	s.h.Write(p)
	if err := <-s.writeErr; err != nil {
		return fmt.Errorf("vram: write to GPU %d at byte %d: %w", s.dev.index, off, err)
	}
	s.off += int64(len(p))
	return nil
}

// Write feeds p in batches without copying it; it lets in-memory sources
// hand over their bytes through io.WriterTo. Since p stays valid until
// Write returns, device writes run on one goroutine a batch or two behind
// the hashing instead of in lockstep with it.
func (s *streamer) Write(p []byte) (int, error) {
	type job struct {
		p   []byte
		off int64
	}
	jobs := make(chan job, 2)
	done := make(chan error, 1)
	go func() {
		var err error
		for j := range jobs {
			if err == nil {
				if err = s.dev.dev.Write(s.ctx, s.buf, j.off, j.p); err != nil {
					err = fmt.Errorf("vram: write to GPU %d at byte %d: %w", s.dev.index, j.off, err)
				}
			}
		}
		done <- err
	}()
	n := 0
	var err error
	for len(p) > 0 && err == nil {
		k := min(int64(len(p)), s.batch)
		if err = s.ctx.Err(); err != nil {
			err = fmt.Errorf("vram: seal interrupted after %d of %d bytes: %w", s.off, s.size, err)
			break
		}
		if k > s.size-s.off {
			err = invalid("shard data is longer than the announced %d bytes", s.size)
			break
		}
		jobs <- job{p[:k], s.off}
		s.header.add(s.off, p[:k])
		s.h.Write(p[:k])
		s.off += k
		n += int(k)
		p = p[k:]
	}
	close(jobs)
	if werr := <-done; err == nil {
		err = werr
	}
	return n, err
}

// copyAndHash streams size bytes from r into buf, hashing them on the way,
// and returns the flat digest, the leaf hashes and the tensor map (nil when
// the shard has none; see [SealRequest.Format]). Host memory stays
// bounded: stagingBuffers buffers of about copyBufferSize bytes, and a
// safetensors header.
//
// With prefix > 0 it also returns the SHA-256 of the first prefix bytes.
func (m *Manager) copyAndHash(ctx context.Context, d *deviceState, buf gpu.Buffer, r io.Reader, size int64, format string, prefix int64) (seal.Hash, []seal.Hash, *tensor.Map, seal.Hash, error) {
	h := seal.NewHasher(m.opts.ChunkSize)
	defer h.Close()
	// Batches are a whole number of chunks so device writes and leaves
	// line up.
	n := min(max(copyBufferSize/m.opts.ChunkSize, 1)*m.opts.ChunkSize, size)
	s := &streamer{ctx: ctx, dev: d, buf: buf, h: h, size: size, batch: n, writeErr: make(chan error, 1),
		header: newHeaderCapture(size, format)}
	if prefix > 0 {
		s.header.hashPrefix(prefix)
	}
	var err error
	switch src := r.(type) {
	case *bytes.Reader, *bytes.Buffer:
		// In-memory sources hand over their bytes without a copy; with no
		// staging buffers, larger batches cost no memory and cut the
		// hand-offs between the hashing goroutines.
		s.batch = min(4*s.batch, size)
		_, err = src.(io.WriterTo).WriteTo(s)
	default:
		err = s.readFrom(r)
	}
	if err != nil {
		return seal.Hash{}, nil, nil, seal.Hash{}, err
	}
	if s.off != size {
		return seal.Hash{}, nil, nil, seal.Hash{}, invalid("shard data ended early: expected %d bytes, got %d", size, s.off)
	}
	tm, err := s.header.tensorMap(format)
	if err != nil {
		return seal.Hash{}, nil, nil, seal.Hash{}, err
	}
	digest, leaves, _ := h.Sum()
	return digest, leaves, tm, s.header.prefixSum(), nil
}

// readFrom reads r into staging buffers on a reader goroutine, so that
// reading overlaps hashing and the device copy, and feeds each buffer.
func (s *streamer) readFrom(r io.Reader) error {
	ctx, cancel := context.WithCancel(s.ctx)
	type batch struct {
		p   []byte
		err error
	}
	free := make(chan []byte, stagingBuffers)
	for range stagingBuffers {
		free <- make([]byte, s.batch)
	}
	filled := make(chan batch, stagingBuffers)
	send := func(b batch) {
		select {
		case filled <- b:
		case <-ctx.Done():
		}
	}
	readerDone := make(chan struct{})
	// The reader goroutine must not touch r after Seal returns.
	defer func() { cancel(); <-readerDone }()
	go func() {
		defer close(readerDone)
		defer close(filled)
		var off int64
		for off < s.size {
			var p []byte
			select {
			case p = <-free:
			case <-ctx.Done():
				return
			}
			p = p[:min(int64(len(p)), s.size-off)]
			if _, err := io.ReadFull(r, p); err != nil {
				if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
					err = invalid("shard data ended early: expected %d bytes", s.size)
				} else {
					err = fmt.Errorf("vram: read shard data at byte %d: %w", off, err)
				}
				send(batch{err: err})
				return
			}
			send(batch{p: p})
			off += int64(len(p))
		}
		// The reader must be exhausted: a longer stream than announced is
		// a caller error, not something to truncate silently.
		var one [1]byte
		if k, _ := r.Read(one[:]); k > 0 {
			send(batch{err: invalid("shard data is longer than the announced %d bytes", s.size)})
		}
	}()
	for b := range filled {
		if b.err != nil {
			return b.err
		}
		if err := s.feed(b.p); err != nil {
			return err
		}
		free <- b.p[:cap(b.p)]
	}
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("vram: seal interrupted: %w", err)
	}
	return nil
}
