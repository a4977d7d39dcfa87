package tensor_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/vramseal/vramseal/tensor"
)

func ExampleMap_Lookup() {
	// A safetensors file with two tensors; the header is padded with spaces
	// to 8-byte alignment, as the reference writer does.
	header := `{"__metadata__":{"format":"pt"},` +
		`"embed":{"dtype":"BF16","shape":[4,8],"data_offsets":[0,64]},` +
		`"norm":{"dtype":"F32","shape":[8],"data_offsets":[64,96]}}`
	header += strings.Repeat(" ", (8-len(header)%8)%8)
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	file = append(file, header...)
	file = append(file, make([]byte, 96)...)

	m, err := tensor.ReadSafetensors(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.Format, len(m.Tensors), "tensors, data at", m.DataStart, m.Metadata)

	// Which tensors does a corrupted 64-byte chunk at offset 128 touch?
	hits, more := m.Lookup(128, 64, 0)
	for _, h := range hits {
		fmt.Println(h)
	}
	fmt.Println(more, "more")
	// Output:
	// safetensors 2 tensors, data at 160 map[format:pt]
	// header (bytes 128-159)
	// embed (BF16 [4 8], bytes 0-31)
	// 0 more
}
