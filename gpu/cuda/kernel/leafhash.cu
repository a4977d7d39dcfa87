/*
 * leafhash.cu: RFC 6962 leaf hashes, SHA-256(0x00 || chunk), one chunk per
 * GPU thread, for vramseal's on-device verification.
 *
 * This one file is compiled two ways:
 *
 *   - as CUDA for the device by gen.sh (clang's NVPTX backend, no CUDA
 *     headers), producing leafhash.ptx, which gpu/cuda embeds and loads
 *     with cuModuleLoadData;
 *   - as plain C for the host by the fake CUDA driver that gpu/cuda's tests
 *     build with gcc (gpu/cuda/cudatest/fakecuda.c includes this file), so
 *     that the kernel's own code is checked against seal.LeafHash in CI.
 *
 * Everything outside the __CUDA__ blocks is C that both GNU C (gcc) and
 * clang's CUDA C++ accept (__restrict__ and __builtin_bswap32 included).
 *
 * Kernel contract (gpu/cuda/kernel.go launches it):
 *
 *   leafhash(data, size, chunk, idx, n, out)
 *     data   device pointer to the buffer (any alignment)
 *     size   buffer length in bytes
 *     chunk  chunk size in bytes (> 0)
 *     idx    device array of n chunk indexes (u64)
 *     n      number of indexes
 *     out    device array of n*32 bytes; thread t writes the leaf hash of
 *            chunk idx[t], bytes [idx[t]*chunk, min((idx[t]+1)*chunk, size))
 *
 *   Thread t = blockIdx.x*blockDim.x + threadIdx.x handles entry t; threads
 *   with t >= n do nothing. An index outside the buffer yields 32 zero
 *   bytes (the host validates indexes first; a zero hash never matches).
 *
 * SHA-256 is FIPS 180-4. The 0x00 prefix shifts the chunk by one byte
 * inside the message, so message word m is chunk bytes [4m-1, 4m+3): when
 * the chunk is 4-byte aligned the kernel loads aligned words and funnels
 * them, (BE[m-1] << 24) | (BE[m] >> 8); otherwise, and for the padded
 * tail, it assembles words byte by byte.
 */

typedef unsigned char lh_u8;
typedef unsigned int lh_u32;
typedef unsigned long long lh_u64;

#ifdef __CUDA__
#define LH_FN __attribute__((device, always_inline)) static __inline__
#define LH_CONST __attribute__((constant))
#define LH_UNROLL _Pragma("unroll")
#else
#define LH_FN static inline
#define LH_CONST
#define LH_UNROLL
#endif

static LH_CONST const lh_u32 lh_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

LH_FN lh_u32 lh_rotr(lh_u32 x, int n) { return (x >> n) | (x << (32 - n)); }

/* lh_compress runs the SHA-256 compression function on one block w. */
LH_FN void lh_compress(lh_u32 st[8], lh_u32 w[16])
{
	lh_u32 a = st[0], b = st[1], c = st[2], d = st[3];
	lh_u32 e = st[4], f = st[5], g = st[6], h = st[7];
	int i;
	LH_UNROLL
	for (i = 0; i < 64; i++) {
		lh_u32 wi;
		if (i < 16) {
			wi = w[i];
		} else {
			lh_u32 w15 = w[(i - 15) & 15], w2 = w[(i - 2) & 15];
			lh_u32 s0 = lh_rotr(w15, 7) ^ lh_rotr(w15, 18) ^ (w15 >> 3);
			lh_u32 s1 = lh_rotr(w2, 17) ^ lh_rotr(w2, 19) ^ (w2 >> 10);
			wi = w[i & 15] + s0 + w[(i - 7) & 15] + s1;
			w[i & 15] = wi;
		}
		lh_u32 t1 = h + (lh_rotr(e, 6) ^ lh_rotr(e, 11) ^ lh_rotr(e, 25)) + ((e & f) ^ (~e & g)) + lh_k[i] + wi;
		lh_u32 t2 = (lh_rotr(a, 2) ^ lh_rotr(a, 13) ^ lh_rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g;
		g = f;
		f = e;
		e = d + t1;
		d = c;
		c = b;
		b = a;
		a = t1 + t2;
	}
	st[0] += a;
	st[1] += b;
	st[2] += c;
	st[3] += d;
	st[4] += e;
	st[5] += f;
	st[6] += g;
	st[7] += h;
}

/*
 * lh_padded returns byte pos of the padded message 0x00 || p[0:n] ||
 * 0x80 || zeros || bitlen, whose length is end (a multiple of 64).
 */
LH_FN lh_u32 lh_padded(const lh_u8 *p, lh_u64 n, lh_u64 end, lh_u64 pos)
{
	lh_u64 len = n + 1;
	if (pos == 0)
		return 0;
	if (pos < len)
		return p[pos - 1];
	if (pos == len)
		return 0x80;
	if (pos >= end - 8)
		return (lh_u32)(((len * 8) >> (8 * (end - 1 - pos))) & 0xff);
	return 0;
}

/*
 * lh_leaf writes SHA-256(0x00 || p[0:n]) to out.
 *
 * Message block j holds chunk bytes [64j-1, 64j+63). For j < n/64 the
 * chunk words [16j, 16j+16) lie inside the chunk, so when p is 4-byte
 * aligned those blocks are read as aligned words (the byte before comes
 * from the previous word), and the words of block j+1 are loaded before
 * block j is compressed, hiding global-memory latency behind the 64
 * rounds. The remaining message blocks and the padding are assembled byte
 * by byte.
 */
LH_FN void lh_leaf(const lh_u8 *__restrict__ p, lh_u64 n, lh_u8 *__restrict__ out)
{
	lh_u32 st[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
	                0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	lh_u32 w[16], cur[16], nxt[16];
	lh_u64 len = n + 1;                      /* message length with the prefix */
	lh_u64 end = ((len + 8) / 64 + 1) * 64;  /* padded length */
	lh_u64 nword = ((lh_u64)p & 3) == 0 ? n / 64 : 0; /* word-path blocks */
	lh_u32 carry = 0; /* BE word m-1; its low byte is the 0x00 prefix for m = 0 */
	const lh_u32 *__restrict__ q = (const lh_u32 *)p;
	lh_u64 j, pos;
	int i;

	if (nword > 0) {
		LH_UNROLL
		for (i = 0; i < 16; i++)
			cur[i] = q[i];
	}
	for (j = 0; j < nword; j++) {
		if (j + 1 < nword) {
			LH_UNROLL
			for (i = 0; i < 16; i++)
				nxt[i] = q[16 * (j + 1) + i];
		}
		LH_UNROLL
		for (i = 0; i < 16; i++) {
			lh_u32 be = __builtin_bswap32(cur[i]);
			w[i] = (carry << 24) | (be >> 8);
			carry = be;
		}
		lh_compress(st, w);
		LH_UNROLL
		for (i = 0; i < 16; i++)
			cur[i] = nxt[i];
	}
	for (pos = 64 * nword; pos < end; pos += 64) {
		LH_UNROLL
		for (i = 0; i < 16; i++) {
			lh_u64 b = pos + 4 * (lh_u64)i;
			w[i] = (lh_padded(p, n, end, b) << 24) | (lh_padded(p, n, end, b + 1) << 16) |
			       (lh_padded(p, n, end, b + 2) << 8) | lh_padded(p, n, end, b + 3);
		}
		lh_compress(st, w);
	}
	LH_UNROLL
	for (i = 0; i < 8; i++) {
		out[4 * i] = (lh_u8)(st[i] >> 24);
		out[4 * i + 1] = (lh_u8)(st[i] >> 16);
		out[4 * i + 2] = (lh_u8)(st[i] >> 8);
		out[4 * i + 3] = (lh_u8)st[i];
	}
}

/* lh_thread is the body of thread t of the leafhash kernel. */
LH_FN void lh_thread(lh_u64 t, const lh_u8 *__restrict__ data, lh_u64 size, lh_u64 chunk,
                     const lh_u64 *__restrict__ idx, lh_u64 n, lh_u8 *__restrict__ out)
{
	lh_u64 c, off, len;
	int i;

	if (t >= n)
		return;
	c = idx[t];
	if (chunk == 0 || size == 0 || c > (size - 1) / chunk) {
		for (i = 0; i < 32; i++)
			out[32 * t + i] = 0;
		return;
	}
	off = c * chunk;
	len = size - off < chunk ? size - off : chunk;
	lh_leaf(data + off, len, out + 32 * t);
}

#ifdef __CUDA__
extern "C" __attribute__((global)) void leafhash(const lh_u8 *__restrict__ data, lh_u64 size, lh_u64 chunk,
                                                 const lh_u64 *__restrict__ idx, lh_u64 n,
                                                 lh_u8 *__restrict__ out)
{
	lh_u64 t = (lh_u64)__nvvm_read_ptx_sreg_ctaid_x() * (lh_u64)__nvvm_read_ptx_sreg_ntid_x() +
	           (lh_u64)__nvvm_read_ptx_sreg_tid_x();
	lh_thread(t, data, size, chunk, idx, n, out);
}
#endif
