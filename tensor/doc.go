// Package tensor reads the tensor tables of model files from untrusted bytes
// and says which tensors a byte range of a file touches, so that an
// integrity failure in a chunk can name the weights it hit.
//
// [ParseSafetensors] and [ReadSafetensors] read a safetensors file's header,
// and [ParseGGUF] a GGUF file's, into a [Map]; [Map.Lookup] turns a byte range of the file into [Hit]s, one
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
//
// # GGUF
//
// The format is ggml's (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md),
// little endian only: "GGUF", u32 version, u64 tensor count, u64 metadata
// count, the metadata pairs (string key, u32 value type, value), the tensor
// infos (string name, u32 n_dims, n_dims u64 dimensions, u32 ggml type, u64
// offset), padding to the alignment, then the tensor data. A string is a u64
// length and that many bytes. [ParseGGUF] accepts a file only when:
//
//   - The version is 2 or 3 (version 1 had 32-bit counts; a big-endian file
//     reads as an unsupported version).
//   - There are at most [MaxGGUFTensors] tensors and [MaxGGUFKVs] pairs, and
//     their minimal encodings fit in the file.
//   - Keys are 1 to [MaxGGUFString] bytes of valid UTF-8 and unique; string
//     values are at most [MaxGGUFString] bytes, and valid UTF-8 outside
//     arrays; value types are 0 to 12; booleans are 0 or 1; arrays hold at
//     most [MaxGGUFArray] elements of one type that is not an array.
//   - general.alignment, when present, is a UINT32 power of two (default 32).
//   - Tensor names are 1 to [MaxNameLen] bytes of valid UTF-8 and unique; a
//     tensor has at most 4 dimensions (GGML_MAX_DIMS), each under 2^63, and a
//     known ggml type (the removed numbers 4, 5, 31-33 and 36-38 are refused).
//   - The first dimension is a multiple of the type's block size, and the
//     byte length, first dimension / block size x block bytes x the other
//     dimensions, does not overflow an int64.
//   - Offsets are multiples of the alignment; the data starts at the first
//     multiple of the alignment after the tensor infos (the end of the file
//     when there are no tensors), and every tensor lies inside the file.
//   - Tensors do not overlap, with the rule for zero-length tensors above.
//
// As with safetensors, holes between tensors are accepted (llama.cpp
// requires each tensor to start at the aligned end of the one before) and
// reported by [Map.Lookup]. [Tensor.DType] is the ggml type name ("F32",
// "Q8_0", ...), [Tensor.Shape] the dimensions as the file lists them
// (ne[0], the innermost, first), [Map.Metadata] holds the scalar and string
// values (numbers in decimal, booleans as "true" or "false"; arrays are
// left out), and the "header" region of [Map.Lookup] runs to the data
// start, padding included.
package tensor
