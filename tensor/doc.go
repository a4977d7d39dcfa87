// Package tensor reads the tensor tables of model files from untrusted bytes
// and says which tensors a byte range of a file touches, so that an
// integrity failure in a chunk can name the weights it hit.
//
// [ParseSafetensors] and [ReadSafetensors] read a safetensors file's header
// into a [Map]; [Map.Lookup] turns a byte range of the file into [Hit]s, one
// per tensor or non-tensor region it overlaps, found by binary search.
//
// Every error about the bytes of a file wraps [ErrMalformed] and names the
// offending entry; parsers decode into a temporary and return nothing else on
// failure, and never panic.
//
// # Safetensors
//
// The format is Hugging Face's (https://github.com/huggingface/safetensors):
//
//	offset 0      u64 little endian N: the header length
//	offset 8      N bytes: the header, a JSON object in UTF-8
//	offset 8+N    the data buffer, to the end of the file
//
// The parser accepts a file only when all of the following hold.
//
//   - 0 < N <= [MaxSafetensorsHeader] (100,000,000 bytes, the reference
//     implementation's MAX_HEADER_SIZE) and 8+N <= the file size.
//   - The header is valid UTF-8, starts with '{' and holds exactly one JSON
//     object, followed by nothing but ASCII spaces (0x20); the reference
//     writer pads the header with spaces to a multiple of 8 bytes. Whitespace
//     inside the object is JSON's.
//   - No object has two members with the same name (after unescaping).
//   - No decoded string contains U+FFFD: Go's JSON decoder turns invalid
//     escapes (lone surrogates) into it, so a name that holds it cannot be
//     told apart from others.
//   - The optional member "__metadata__" is an object whose members are all
//     strings. Its keys and values are returned in [Map.Metadata].
//   - Every other member is a tensor. Its name is 1 to [MaxNameLen] bytes;
//     there are at most [MaxTensors] tensors. Its value is an object with
//     exactly the members "dtype" (a string), "shape" (an array of at most
//     [MaxRank] integers, possibly empty for a scalar) and "data_offsets"
//     (an array of two integers [begin, end], begin <= end), in any order.
//   - Integers are JSON numbers made of decimal digits only (no sign,
//     fraction or exponent) that fit in an int64.
//   - dtype is one of BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E4M3FNUZ,
//     F8_E5M2FNUZ, F8_E8M0 (1 byte each), I16, U16, F16, BF16 (2), I32, U32,
//     F32 (4), I64, U64, F64, C64 (8). The sub-byte types F4, F6_E2M3 and
//     F6_E3M2 are refused as unsupported.
//   - The product of the shape times the dtype size, computed left to right
//     without overflowing an int64, equals end-begin.
//   - end <= file size - (8+N): the tensor lies inside the data buffer.
//   - No two tensors of nonzero length share a byte, and no tensor of length
//     zero lies strictly inside another tensor.
//
// The reference implementation also requires the tensors to cover the data
// buffer exactly: the first at offset 0, each starting where the previous
// ends, the last ending at the end of the file. This package accepts holes
// and bytes after the last tensor, so that it can describe files from other
// writers (and files that were tampered with), and reports them: [Map.Lookup]
// names the bytes in holes "padding" and the bytes after the last tensor
// "trailing". Where both implementations accept a file, they read the same
// tensors from it.
//
// In the [Map], a tensor's [Tensor.Offset] is absolute, 8+N+begin, and
// [Map.Tensors] are sorted by offset, then length, then name.
package tensor
