/*
 * fakecuda.c: a fake CUDA driver (libcuda.so.1) and NVML
 * (libnvidia-ml.so.1) over host memory, for gpu/cuda's tests and for
 * consumers of exported shards (see gpu/cuda/cudatest, which embeds this
 * file and builds it).
 *
 * cudatest builds it with
 *
 *   gcc -O2 -Wall -Werror -shared -fPIC -pthread -I DIR -o fakecuda.so fakecuda.c
 *
 * where DIR holds the kernel source leafhash.cu, and tests point
 * cuda.Options.LibraryPath and NVMLPath at the result. It exports the
 * symbols gpu/cuda binds, with the driver's signatures and CUresult
 * codes. Device memory is host memory; a CUdeviceptr is a host address.
 * Contexts are per thread as in the real driver: a call that needs a
 * context fails with CUDA_ERROR_INVALID_CONTEXT unless the calling thread
 * made one current, which checks gpu/cuda's one-thread-per-device design.
 * cuLaunchKernel runs the real kernel source (leafhash.cu, compiled here
 * as C) on the CPU, one loop iteration per GPU thread.
 *
 * Virtual memory management (cuMemCreate and its kin) is implemented over
 * memfd, mmap and mprotect, so that its protections are enforced by the
 * host's MMU as the GPU's MMU enforces the real driver's:
 *
 *   cuMemCreate          memfd_create + ftruncate: a physical allocation,
 *                        charged to the device like cuMemAlloc_v2; the size
 *                        must be a multiple of the granularity (2 MiB).
 *   cuMemAddressReserve  an mmap(PROT_NONE) range, aligned as asked.
 *   cuMemMap             mmap(MAP_SHARED | MAP_FIXED) of the memfd over
 *                        part of a reservation, still PROT_NONE.
 *   cuMemSetAccess       mprotect: PROT_READ for CU_MEM_ACCESS_FLAGS_PROT_READ,
 *                        PROT_READ | PROT_WRITE for PROT_READWRITE, the union
 *                        over the devices given access. A read-only range
 *                        is really read-only: a copy or a store into it
 *                        dies of SIGSEGV (on a GPU: an MMU fault). The range
 *                        must be exactly one mapping (the real driver
 *                        accepts any fully mapped range).
 *   cuMemExportToShareableHandle (POSIX file descriptor)
 *                        a dup of the memfd. The real driver's descriptor
 *                        is an opaque handle as well, which any process
 *                        holding it can import and map with any access.
 *   cuMemImportFromShareableHandle
 *                        a new allocation handle over a dup of the
 *                        descriptor (the caller keeps its own), in this or
 *                        another process; the device is read back from the
 *                        memfd's name, and the memory is not charged twice.
 *   cuMemUnmap, cuMemAddressFree, cuMemRelease
 *                        undo the above; physical memory is freed, and its
 *                        charge returned, once its last handle is released
 *                        and its last mapping unmapped (as in the driver).
 *                        cuMemAddressFree of a range that still holds a
 *                        mapping fails (the fake is stricter than the
 *                        driver, to catch release-order bugs).
 *
 * cuPointerGetAttributes reports mapped VMM memory as device memory of
 * the allocation's device, as the real driver does. A process that only
 * imports needs cuInit, cuDeviceGet, cuDeviceGetUuid_v2 (to find the
 * device by UUID), cuDevicePrimaryCtxRetain, cuCtxSetCurrent, the calls
 * above and the synchronous cuMemcpyDtoH_v2 / cuMemcpyHtoD_v2.
 *
 * Fault knobs, set with fake_set(name, value) and cleared by fake_reset():
 *   init_error N        cuInit returns N
 *   devices N           number of devices (default 2)
 *   total_mib N         memory per device in MiB (default 256, or
 *                       $FAKECUDA_TOTAL_MIB)
 *   driver_version N    cuDriverGetVersion result (default 12040)
 *   fail_alloc N        the next N cuMemAlloc_v2 or cuMemCreate calls
 *                       return OUT_OF_MEMORY
 *   fail_map N          the next N cuMemMap calls return OUT_OF_MEMORY
 *   fail_access N       the next N cuMemSetAccess calls return INVALID_VALUE
 *   managed 1           pointer facts report managed memory
 *   memtype N           pointer facts report memory type N
 *   wrong_ordinal 1     pointer facts and allocation properties report the
 *                       next device's ordinal
 *   host_pointer 1      pointer facts report a host pointer
 *   unmapped 1          pointer facts report an unmapped range
 *   vmm_loc_type N      allocation properties report location type N
 *   vmm_no_posix_fd 1   allocation properties report no POSIX fd handle type
 *   no_vmm 1            the devices lack virtual memory management
 *                       (attributes 102 and 103 are 0, cuMemCreate fails)
 *   no_drop 1           allocations do not lower cuMemGetInfo's free
 *   integrated 1        CU_DEVICE_ATTRIBUTE_INTEGRATED is 1
 *   pageable 1          CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS is 1
 *   module_error N      cuModuleLoadData returns N
 *   launch_fail 1       cuLaunchKernel returns LAUNCH_FAILED (sticky)
 *   lost_after N        the launch after N good ones faults: the device is
 *                       lost and every later call on it returns
 *                       ILLEGAL_ADDRESS (sticky, as on a real GPU)
 *   nvml_init_error N   nvmlInit_v2 returns N
 * fake_get(name) reads counters: live_allocs (cuMemAlloc_v2 allocations
 * and physical VMM allocations made here, not imports), live_pinned,
 * pinned_dirty (non-zero bytes in live pinned buffers), used (device bytes
 * charged), launches, no_context (calls refused for lack of a current
 * context), and for VMM vmm_live (physical allocations, imports
 * included), vmm_mappings, vmm_reserved (live reservations), and the
 * running totals vmm_creates, vmm_imports and vmm_exports.
 * fake_flip(ptr, off, mask) XORs mask into byte off of the live device
 * allocation or VMM mapping that starts at ptr, behind the driver's back
 * (as a bit flip in VRAM or a stray write by another kernel would), and
 * returns 0; it returns -1, changing nothing, when there is no such
 * allocation or off lies outside it. It writes VMM memory through its
 * memfd (pwrite), so it works on read-only mappings too: it stands for a
 * hardware fault, which no page protection stops.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leafhash.cu"

typedef int CUresult;
typedef unsigned long long CUdeviceptr;

enum {
	OK = 0,
	INVALID_VALUE = 1,
	OUT_OF_MEMORY = 2,
	NOT_INITIALIZED = 3,
	NO_DEVICE = 100,
	INVALID_DEVICE = 101,
	INVALID_CONTEXT = 201,
	INVALID_HANDLE = 400,
	NOT_FOUND = 500,
	ILLEGAL_ADDRESS = 700,
	LAUNCH_FAILED = 719,
	NOT_SUPPORTED = 801,
};

#define MAXDEV 8
#define GRANULE (2ull << 20)

struct ctx {
	int dev;
	int refs;
};

struct alloc {
	uintptr_t base;
	size_t size;
	int dev;
	int pinned;
	unsigned long long charge; /* bytes taken from used[dev] */
	struct alloc *next;
};

/* VMM. A CUmemGenericAllocationHandle is the address of a struct phys. */

typedef unsigned long long CUmemGenericAllocationHandle;

typedef struct {
	int type; /* CUmemLocationType: 1 device */
	int id;
} CUmemLocation;

typedef struct {
	int type;                 /* CUmemAllocationType: 1 pinned */
	int requestedHandleTypes; /* CUmemAllocationHandleType bits: 1 POSIX fd */
	CUmemLocation location;
	void *win32HandleMetaData;
	struct {
		unsigned char compressionType;
		unsigned char gpuDirectRDMACapable;
		unsigned short usage;
		unsigned char reserved[4];
	} allocFlags;
} CUmemAllocationProp;

typedef struct {
	CUmemLocation location;
	int flags; /* CUmemAccess_flags: 0 none, 1 read, 3 read-write */
} CUmemAccessDesc;

_Static_assert(sizeof(CUmemAllocationProp) == 32, "CUmemAllocationProp layout");
_Static_assert(sizeof(CUmemAccessDesc) == 12, "CUmemAccessDesc layout");

struct phys {
	int fd; /* memfd holding the bytes */
	size_t size;
	int dev;
	int handle_types;
	int imported;
	int refs; /* handles: the creating or importing one, and retained ones */
	int maps; /* live mappings */
	unsigned long long charge;
	struct phys *next;
};

struct resv {
	uintptr_t base;
	size_t size;
	struct resv *next;
};

struct mapping {
	uintptr_t base;
	size_t size;
	size_t offset;
	struct phys *ph;
	int access[MAXDEV];
	struct mapping *next;
};

static struct phys *physs;
static struct resv *resvs;
static struct mapping *mappings;
static long long vmm_creates, vmm_imports, vmm_exports;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct ctx ctxs[MAXDEV];
static struct alloc *allocs;
static unsigned long long used[MAXDEV];
static int lost[MAXDEV];
static int initialized;
static long long launches, no_context;
static long long lost_base; /* launches when lost_after was set */
static __thread struct ctx *current;

static struct {
	long long init_error, devices, total_mib, driver_version, fail_alloc, managed, memtype,
	    wrong_ordinal, host_pointer, unmapped, no_drop, integrated, pageable, module_error,
	    launch_fail, lost_after, nvml_init_error, fail_map, fail_access, vmm_loc_type,
	    vmm_no_posix_fd, no_vmm;
} k;

static void defaults(void)
{
	memset(&k, 0, sizeof k);
	k.devices = 2;
	k.total_mib = getenv("FAKECUDA_TOTAL_MIB") ? atoll(getenv("FAKECUDA_TOTAL_MIB")) : 256;
	k.driver_version = 12040;
	k.memtype = 2;
}

/* FAKECUDA_TOTAL_MIB sets the default of total_mib, for dry runs of
 * scripts/gpu-check.sh against this fake. */
__attribute__((constructor)) static void fake_init(void) { defaults(); }

void fake_reset(void)
{
	pthread_mutex_lock(&mu);
	defaults();
	memset(lost, 0, sizeof lost);
	pthread_mutex_unlock(&mu);
}

int fake_set(const char *name, long long v)
{
#define KNOB(n)                          \
	if (strcmp(name, #n) == 0) {         \
		pthread_mutex_lock(&mu);         \
		k.n = v;                         \
		lost_base = launches;            \
		pthread_mutex_unlock(&mu);       \
		return 0;                        \
	}
	KNOB(init_error) KNOB(devices) KNOB(total_mib) KNOB(driver_version) KNOB(fail_alloc)
	KNOB(managed) KNOB(memtype) KNOB(wrong_ordinal) KNOB(host_pointer) KNOB(unmapped)
	KNOB(no_drop) KNOB(integrated) KNOB(pageable) KNOB(module_error) KNOB(launch_fail)
	KNOB(lost_after) KNOB(nvml_init_error) KNOB(fail_map) KNOB(fail_access) KNOB(vmm_loc_type)
	KNOB(vmm_no_posix_fd) KNOB(no_vmm)
#undef KNOB
	return -1;
}

long long fake_get(const char *name)
{
	long long r = -1;
	struct alloc *a;
	struct phys *ph;
	struct resv *rv;
	struct mapping *m;
	pthread_mutex_lock(&mu);
	if (strcmp(name, "live_allocs") == 0 || strcmp(name, "live_pinned") == 0) {
		int pinned = name[5] == 'p';
		r = 0;
		for (a = allocs; a; a = a->next)
			r += a->pinned == pinned;
		if (!pinned)
			for (ph = physs; ph; ph = ph->next)
				r += !ph->imported;
	} else if (strcmp(name, "vmm_live") == 0) {
		r = 0;
		for (ph = physs; ph; ph = ph->next)
			r++;
	} else if (strcmp(name, "vmm_mappings") == 0) {
		r = 0;
		for (m = mappings; m; m = m->next)
			r++;
	} else if (strcmp(name, "vmm_reserved") == 0) {
		r = 0;
		for (rv = resvs; rv; rv = rv->next)
			r++;
	} else if (strcmp(name, "vmm_creates") == 0) {
		r = vmm_creates;
	} else if (strcmp(name, "vmm_imports") == 0) {
		r = vmm_imports;
	} else if (strcmp(name, "vmm_exports") == 0) {
		r = vmm_exports;
	} else if (strcmp(name, "pinned_dirty") == 0) {
		r = 0;
		for (a = allocs; a; a = a->next)
			if (a->pinned)
				for (size_t i = 0; i < a->size; i++)
					r += ((unsigned char *)a->base)[i] != 0;
	} else if (strcmp(name, "used") == 0) {
		r = 0;
		for (int d = 0; d < MAXDEV; d++)
			r += used[d];
	} else if (strcmp(name, "launches") == 0) {
		r = launches;
	} else if (strcmp(name, "no_context") == 0) {
		r = no_context;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

int fake_flip(unsigned long long ptr, long long off, int mask)
{
	int r = -1;
	struct alloc *a;
	struct mapping *m;
	pthread_mutex_lock(&mu);
	for (a = allocs; a; a = a->next) {
		if (!a->pinned && a->base == ptr) {
			if (off >= 0 && (unsigned long long)off < a->size) {
				((unsigned char *)a->base)[off] ^= (unsigned char)mask;
				r = 0;
			}
			goto out;
		}
	}
	for (m = mappings; m; m = m->next) {
		if (m->base == ptr) {
			unsigned char b;
			off_t at = (off_t)(m->offset + (size_t)off);
			if (off >= 0 && (unsigned long long)off < m->size && pread(m->ph->fd, &b, 1, at) == 1) {
				b ^= (unsigned char)mask;
				if (pwrite(m->ph->fd, &b, 1, at) == 1)
					r = 0;
			}
			goto out;
		}
	}
out:
	pthread_mutex_unlock(&mu);
	return r;
}

/* need checks the calling thread's context; call with mu held. */
static CUresult need(void)
{
	if (!initialized)
		return NOT_INITIALIZED;
	if (current == NULL || current->refs == 0) {
		no_context++;
		return INVALID_CONTEXT;
	}
	if (lost[current->dev])
		return ILLEGAL_ADDRESS;
	return OK;
}

static int valid_dev(int d) { return initialized && d >= 0 && d < k.devices && d < MAXDEV; }

static struct alloc *find(uintptr_t p, int pinned)
{
	struct alloc *a;
	for (a = allocs; a; a = a->next)
		if (a->pinned == pinned && p >= a->base && p < a->base + a->size)
			return a;
	return NULL;
}

/* findmap returns the VMM mapping that contains p; call with mu held. */
static struct mapping *findmap(uintptr_t p)
{
	struct mapping *m;
	for (m = mappings; m; m = m->next)
		if (p >= m->base && p < m->base + m->size)
			return m;
	return NULL;
}

static void uuid_bytes(int d, unsigned char u[16])
{
	for (int i = 0; i < 16; i++)
		u[i] = (unsigned char)(0x10 * (d + 1) + i);
}

static void uuid_string(int d, char *s, size_t n)
{
	unsigned char u[16];
	uuid_bytes(d, u);
	snprintf(s, n, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
	         u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
}

/* Initialization and devices. */

CUresult cuInit(unsigned int flags)
{
	CUresult r = OK;
	pthread_mutex_lock(&mu);
	if (flags != 0)
		r = INVALID_VALUE;
	else if (k.init_error)
		r = (CUresult)k.init_error;
	else
		initialized = 1;
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuDriverGetVersion(int *v)
{
	*v = (int)k.driver_version;
	return OK;
}

CUresult cuGetErrorName(CUresult r, const char **s)
{
	(void)r;
	*s = NULL;
	return INVALID_VALUE;
}

CUresult cuDeviceGetCount(int *n)
{
	if (!initialized)
		return NOT_INITIALIZED;
	*n = (int)k.devices;
	return OK;
}

CUresult cuDeviceGet(int *dev, int ordinal)
{
	if (!valid_dev(ordinal))
		return INVALID_DEVICE;
	*dev = ordinal;
	return OK;
}

CUresult cuDeviceGetName(char *name, int len, int dev)
{
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	snprintf(name, (size_t)len, "Fake CUDA Device %d", dev);
	return OK;
}

CUresult cuDeviceGetUuid_v2(unsigned char *u, int dev)
{
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	uuid_bytes(dev, u);
	return OK;
}

CUresult cuDeviceTotalMem_v2(size_t *b, int dev)
{
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	*b = (size_t)k.total_mib << 20;
	return OK;
}

CUresult cuDeviceGetPCIBusId(char *s, int len, int dev)
{
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	snprintf(s, (size_t)len, "0000:%02x:00.0", 0x17 + dev);
	return OK;
}

CUresult cuDeviceGetAttribute(int *v, int attr, int dev)
{
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	switch (attr) {
	case 18: /* INTEGRATED */
		*v = (int)k.integrated;
		break;
	case 88: /* PAGEABLE_MEMORY_ACCESS */
	case 100: /* PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES */
		*v = (int)k.pageable;
		break;
	case 75: /* COMPUTE_CAPABILITY_MAJOR */
		*v = 9;
		break;
	case 16: /* MULTIPROCESSOR_COUNT */
		*v = 132;
		break;
	case 102: /* VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED */
	case 103: /* HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED */
		*v = !k.no_vmm;
		break;
	case 32: /* ECC_ENABLED */
	case 41: /* UNIFIED_ADDRESSING */
	case 83: /* MANAGED_MEMORY */
	case 89: /* CONCURRENT_MANAGED_ACCESS */
		*v = 1;
		break;
	default:
		*v = 0;
	}
	return OK;
}

/* Contexts. */

CUresult cuDevicePrimaryCtxRetain(struct ctx **c, int dev)
{
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	ctxs[dev].dev = dev;
	ctxs[dev].refs++;
	*c = &ctxs[dev];
	pthread_mutex_unlock(&mu);
	return OK;
}

CUresult cuDevicePrimaryCtxRelease_v2(int dev)
{
	CUresult r = OK;
	if (!valid_dev(dev))
		return INVALID_DEVICE;
	pthread_mutex_lock(&mu);
	if (ctxs[dev].refs == 0)
		r = INVALID_CONTEXT;
	else
		ctxs[dev].refs--;
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuCtxSetCurrent(struct ctx *c)
{
	current = c;
	return OK;
}

/* Memory. */

CUresult cuMemGetInfo_v2(size_t *free, size_t *total)
{
	CUresult r;
	pthread_mutex_lock(&mu);
	r = need();
	if (r == OK) {
		unsigned long long t = (unsigned long long)k.total_mib << 20;
		*total = t;
		*free = used[current->dev] > t ? 0 : t - used[current->dev];
	}
	pthread_mutex_unlock(&mu);
	return r;
}

static CUresult alloc(uintptr_t *p, size_t size, int pinned)
{
	CUresult r;
	struct alloc *a;
	unsigned long long charge = (size + GRANULE - 1) / GRANULE * GRANULE;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	if (size == 0) {
		r = INVALID_VALUE;
		goto out;
	}
	if (!pinned) {
		if (k.fail_alloc > 0) {
			k.fail_alloc--;
			r = OUT_OF_MEMORY;
			goto out;
		}
		if (used[current->dev] + charge > ((unsigned long long)k.total_mib << 20)) {
			r = OUT_OF_MEMORY;
			goto out;
		}
	}
	a = calloc(1, sizeof *a);
	/* Fill fresh memory with garbage: allocation contents are unspecified. */
	void *m = malloc(size);
	if (a == NULL || m == NULL) {
		free(a);
		free(m);
		r = OUT_OF_MEMORY;
		goto out;
	}
	memset(m, pinned ? 0x5a : 0xa5, size);
	a->base = (uintptr_t)m;
	a->size = size;
	a->dev = current->dev;
	a->pinned = pinned;
	a->next = allocs;
	allocs = a;
	if (!pinned && !k.no_drop) {
		a->charge = charge;
		used[current->dev] += charge;
	}
	*p = a->base;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

static CUresult release(uintptr_t p, int pinned)
{
	CUresult r;
	struct alloc **pp, *a;
	pthread_mutex_lock(&mu);
	r = need();
	/* A lost device still gives its memory back, as destroying its
	 * context would, but reports the loss. */
	if (r != OK && r != ILLEGAL_ADDRESS)
		goto out;
	for (pp = &allocs; (a = *pp) != NULL; pp = &a->next) {
		if (a->base == p && a->pinned == pinned) {
			*pp = a->next;
			used[a->dev] -= a->charge < used[a->dev] ? a->charge : used[a->dev];
			free((void *)a->base);
			free(a);
			goto out;
		}
	}
	if (r == OK)
		r = INVALID_VALUE;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size)
{
	uintptr_t q = 0;
	CUresult r = alloc(&q, size, 0);
	*p = q;
	return r;
}

CUresult cuMemFree_v2(CUdeviceptr p) { return release((uintptr_t)p, 0); }

CUresult cuMemAllocHost_v2(void **p, size_t size)
{
	uintptr_t q = 0;
	CUresult r = alloc(&q, size, 1);
	*p = (void *)q;
	return r;
}

CUresult cuMemFreeHost(void *p) { return release((uintptr_t)p, 1); }

/* checkdev reports whether [p, p+n) lies inside one device allocation or
 * one VMM mapping. It does not check a mapping's access: the copy or
 * kernel that follows touches the memory, and the host MMU enforces it. */
static int checkdev(uintptr_t p, size_t n)
{
	struct alloc *a = find(p, 0);
	struct mapping *m;
	if (a != NULL)
		return n <= a->base + a->size - p;
	m = findmap(p);
	return m != NULL && n <= m->base + m->size - p;
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void *src, size_t n, void *stream)
{
	CUresult r;
	(void)stream;
	pthread_mutex_lock(&mu);
	r = need();
	if (r == OK && !checkdev((uintptr_t)dst, n))
		r = INVALID_VALUE;
	if (r == OK)
		memcpy((void *)(uintptr_t)dst, src, n);
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemcpyDtoHAsync_v2(void *dst, CUdeviceptr src, size_t n, void *stream)
{
	CUresult r;
	(void)stream;
	pthread_mutex_lock(&mu);
	r = need();
	if (r == OK && !checkdev((uintptr_t)src, n))
		r = INVALID_VALUE;
	if (r == OK)
		memcpy(dst, (void *)(uintptr_t)src, n);
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dst, const void *src, size_t n)
{
	return cuMemcpyHtoDAsync_v2(dst, src, n, NULL);
}

CUresult cuMemcpyDtoH_v2(void *dst, CUdeviceptr src, size_t n)
{
	return cuMemcpyDtoHAsync_v2(dst, src, n, NULL);
}

CUresult cuPointerGetAttributes(unsigned int n, const int *attrs, void **data, CUdeviceptr p)
{
	CUresult r;
	struct alloc *a;
	struct mapping *m = NULL;
	int dev = 0;
	uintptr_t base = 0;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	a = find((uintptr_t)p, 0);
	if (a != NULL) {
		dev = a->dev;
		base = a->base;
	} else if ((m = findmap((uintptr_t)p)) != NULL) {
		dev = m->ph->dev;
		base = m->base;
	}
	for (unsigned int i = 0; i < n; i++) {
		int found = a != NULL || m != NULL;
		switch (attrs[i]) {
		case 2: /* MEMORY_TYPE (CUmemorytype, 4 bytes) */
			*(unsigned int *)data[i] = found ? (unsigned int)k.memtype : 0;
			break;
		case 4: /* HOST_POINTER */
			*(void **)data[i] = found && k.host_pointer ? (void *)base : NULL;
			break;
		case 8: /* IS_MANAGED (bool, one byte) */
			*(unsigned char *)data[i] = found && k.managed;
			break;
		case 9: /* DEVICE_ORDINAL */
			*(int *)data[i] = found ? dev + (int)k.wrong_ordinal : -2;
			break;
		case 13: /* MAPPED (bool, one byte) */
			*(unsigned char *)data[i] = found && !k.unmapped;
			break;
		default:
			r = INVALID_VALUE;
		}
	}
out:
	pthread_mutex_unlock(&mu);
	return r;
}

/* Virtual memory management. */

static int prop_ok(const CUmemAllocationProp *p)
{
	return p != NULL && p->type == 1 && p->location.type == 1 && valid_dev(p->location.id) &&
	       (p->requestedHandleTypes & ~1) == 0 && p->win32HandleMetaData == NULL &&
	       p->allocFlags.compressionType == 0 && p->allocFlags.usage == 0;
}

/* findphys returns the live physical allocation of handle h; call with mu
 * held. */
static struct phys *findphys(CUmemGenericAllocationHandle h)
{
	struct phys *ph;
	for (ph = physs; ph; ph = ph->next)
		if ((CUmemGenericAllocationHandle)(uintptr_t)ph == h && ph->refs > 0)
			return ph;
	return NULL;
}

/* putphys frees ph once nothing refers to it; call with mu held. */
static void putphys(struct phys *ph)
{
	struct phys **pp;
	if (ph->refs > 0 || ph->maps > 0)
		return;
	for (pp = &physs; *pp; pp = &(*pp)->next) {
		if (*pp == ph) {
			*pp = ph->next;
			break;
		}
	}
	used[ph->dev] -= ph->charge < used[ph->dev] ? ph->charge : used[ph->dev];
	close(ph->fd);
	free(ph);
}

CUresult cuMemGetAllocationGranularity(size_t *g, const CUmemAllocationProp *prop, int option)
{
	CUresult r = OK;
	pthread_mutex_lock(&mu);
	if (!initialized)
		r = NOT_INITIALIZED;
	else if (g == NULL || !prop_ok(prop) || (option != 0 && option != 1))
		r = INVALID_VALUE;
	else if (k.no_vmm)
		r = NOT_SUPPORTED;
	else
		*g = GRANULE; /* minimum and recommended alike, as on most GPUs */
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
                     unsigned long long flags)
{
	CUresult r;
	struct phys *ph = NULL;
	int fd = -1, dev;
	char name[32];
	void *m;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	if (h == NULL || !prop_ok(prop) || flags != 0 || size == 0 || size % GRANULE != 0) {
		r = INVALID_VALUE;
		goto out;
	}
	if (k.no_vmm) {
		r = NOT_SUPPORTED;
		goto out;
	}
	dev = prop->location.id;
	if (k.fail_alloc > 0) {
		k.fail_alloc--;
		r = OUT_OF_MEMORY;
		goto out;
	}
	if (used[dev] + size > ((unsigned long long)k.total_mib << 20)) {
		r = OUT_OF_MEMORY;
		goto out;
	}
	/* The name carries the device to importing processes. */
	snprintf(name, sizeof name, "fakecuda-dev%d", dev);
	fd = memfd_create(name, MFD_CLOEXEC);
	ph = calloc(1, sizeof *ph);
	if (fd < 0 || ph == NULL || ftruncate(fd, (off_t)size) != 0) {
		r = OUT_OF_MEMORY;
		goto out;
	}
	/* Fill fresh memory with garbage: allocation contents are unspecified. */
	m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		r = OUT_OF_MEMORY;
		goto out;
	}
	memset(m, 0xa5, size);
	munmap(m, size);
	ph->fd = fd;
	ph->size = size;
	ph->dev = dev;
	ph->handle_types = prop->requestedHandleTypes;
	ph->refs = 1;
	if (!k.no_drop) {
		ph->charge = size;
		used[dev] += size;
	}
	ph->next = physs;
	physs = ph;
	vmm_creates++;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)ph;
	ph = NULL;
	fd = -1;
out:
	if (fd >= 0)
		close(fd);
	free(ph);
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
	CUresult r;
	struct phys *ph;
	pthread_mutex_lock(&mu);
	r = need(); /* a lost device still takes memory back, reporting the loss */
	if (r != OK && r != ILLEGAL_ADDRESS)
		goto out;
	ph = findphys(h);
	if (ph == NULL) {
		if (r == OK)
			r = INVALID_VALUE;
		goto out;
	}
	ph->refs--;
	putphys(ph);
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemAddressReserve(CUdeviceptr *p, size_t size, size_t align, CUdeviceptr addr,
                             unsigned long long flags)
{
	CUresult r;
	struct resv *rv;
	uintptr_t raw, base;
	void *m;
	(void)addr; /* a hint; the fake lets the kernel choose */
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	if (align == 0)
		align = GRANULE;
	if (p == NULL || flags != 0 || size == 0 || size % GRANULE != 0 || (align & (align - 1)) != 0 ||
	    align < GRANULE || size > SIZE_MAX - align) {
		r = INVALID_VALUE;
		goto out;
	}
	m = mmap(NULL, size + align, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	rv = calloc(1, sizeof *rv);
	if (m == MAP_FAILED || rv == NULL) {
		if (m != MAP_FAILED)
			munmap(m, size + align);
		free(rv);
		r = OUT_OF_MEMORY;
		goto out;
	}
	raw = (uintptr_t)m;
	base = (raw + align - 1) & ~(uintptr_t)(align - 1);
	if (base > raw)
		munmap(m, base - raw);
	if (raw + size + align > base + size)
		munmap((void *)(base + size), raw + size + align - (base + size));
	rv->base = base;
	rv->size = size;
	rv->next = resvs;
	resvs = rv;
	*p = base;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemAddressFree(CUdeviceptr p, size_t size)
{
	CUresult r;
	struct resv **pp, *rv;
	struct mapping *m;
	pthread_mutex_lock(&mu);
	r = need(); /* a lost device still takes memory back, reporting the loss */
	if (r != OK && r != ILLEGAL_ADDRESS)
		goto out;
	for (pp = &resvs; (rv = *pp) != NULL; pp = &rv->next)
		if (rv->base == p && rv->size == size)
			break;
	if (rv == NULL) {
		r = INVALID_VALUE;
		goto out;
	}
	for (m = mappings; m; m = m->next) {
		if (m->base >= rv->base && m->base < rv->base + rv->size) {
			r = INVALID_VALUE; /* still mapped: unmap first */
			goto out;
		}
	}
	*pp = rv->next;
	munmap((void *)rv->base, rv->size);
	free(rv);
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemMap(CUdeviceptr p, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                  unsigned long long flags)
{
	CUresult r;
	struct phys *ph;
	struct resv *rv;
	struct mapping *m;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	ph = findphys(h);
	for (rv = resvs; rv; rv = rv->next)
		if (p >= rv->base && p < rv->base + rv->size)
			break;
	if (ph == NULL || rv == NULL || flags != 0 || size == 0 || p % GRANULE != 0 || size % GRANULE != 0 ||
	    offset % GRANULE != 0 || size > rv->base + rv->size - p || offset > ph->size ||
	    size > ph->size - offset) {
		r = INVALID_VALUE;
		goto out;
	}
	for (m = mappings; m; m = m->next) {
		if (p < m->base + m->size && m->base < p + size) {
			r = 208; /* ALREADY_MAPPED */
			goto out;
		}
	}
	if (k.fail_map > 0) {
		k.fail_map--;
		r = OUT_OF_MEMORY;
		goto out;
	}
	m = calloc(1, sizeof *m);
	if (m == NULL || mmap((void *)(uintptr_t)p, size, PROT_NONE, MAP_SHARED | MAP_FIXED, ph->fd, (off_t)offset) ==
	                     MAP_FAILED) {
		free(m);
		r = OUT_OF_MEMORY;
		goto out;
	}
	m->base = p;
	m->size = size;
	m->offset = offset;
	m->ph = ph;
	m->next = mappings;
	mappings = m;
	ph->maps++;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemUnmap(CUdeviceptr p, size_t size)
{
	CUresult r;
	struct mapping **pp, *m;
	struct phys *ph;
	pthread_mutex_lock(&mu);
	r = need(); /* a lost device still takes memory back, reporting the loss */
	if (r != OK && r != ILLEGAL_ADDRESS)
		goto out;
	for (pp = &mappings; (m = *pp) != NULL; pp = &m->next)
		if (m->base == p && m->size == size)
			break;
	if (m == NULL) {
		r = INVALID_VALUE;
		goto out;
	}
	/* Put the reservation's PROT_NONE placeholder back. */
	mmap((void *)m->base, m->size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
	*pp = m->next;
	ph = m->ph;
	free(m);
	ph->maps--;
	putphys(ph);
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemSetAccess(CUdeviceptr p, size_t size, const CUmemAccessDesc *desc, size_t count)
{
	CUresult r;
	struct mapping *m;
	int access[MAXDEV], prot = PROT_NONE;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	for (m = mappings; m; m = m->next)
		if (m->base == p && m->size == size)
			break;
	if (m == NULL || desc == NULL || count == 0) {
		r = INVALID_VALUE;
		goto out;
	}
	memcpy(access, m->access, sizeof access);
	for (size_t i = 0; i < count; i++) {
		const CUmemAccessDesc *d = &desc[i];
		if (d->location.type != 1 || !valid_dev(d->location.id) ||
		    (d->flags != 0 && d->flags != 1 && d->flags != 3)) {
			r = INVALID_VALUE;
			goto out;
		}
		access[d->location.id] = d->flags;
	}
	if (k.fail_access > 0) {
		k.fail_access--;
		r = INVALID_VALUE;
		goto out;
	}
	for (int d = 0; d < MAXDEV; d++) {
		if (access[d] == 3)
			prot = PROT_READ | PROT_WRITE;
		else if (access[d] == 1 && prot == PROT_NONE)
			prot = PROT_READ;
	}
	if (mprotect((void *)m->base, m->size, prot) != 0) {
		r = INVALID_VALUE;
		goto out;
	}
	memcpy(m->access, access, sizeof access);
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemGetAccess(unsigned long long *flags, const CUmemLocation *loc, CUdeviceptr p)
{
	CUresult r;
	struct mapping *m;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	m = findmap((uintptr_t)p);
	if (flags == NULL || loc == NULL || loc->type != 1 || !valid_dev(loc->id) || m == NULL) {
		r = INVALID_VALUE;
		goto out;
	}
	*flags = (unsigned long long)m->access[loc->id];
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemExportToShareableHandle(void *out, CUmemGenericAllocationHandle h, int type,
                                      unsigned long long flags)
{
	CUresult r;
	struct phys *ph;
	int fd;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	ph = findphys(h);
	if (out == NULL || ph == NULL || flags != 0) {
		r = INVALID_VALUE;
		goto out;
	}
	if (type != 1 || (ph->handle_types & 1) == 0) {
		r = NOT_SUPPORTED; /* not requested at cuMemCreate */
		goto out;
	}
	fd = fcntl(ph->fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		r = 304; /* OPERATING_SYSTEM */
		goto out;
	}
	*(int *)out = fd;
	vmm_exports++;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemImportFromShareableHandle(CUmemGenericAllocationHandle *h, void *os, int type)
{
	CUresult r;
	struct phys *ph;
	struct stat st;
	char path[64], link[128];
	ssize_t n;
	int fd = (int)(intptr_t)os, dup, dev;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	if (h == NULL || type != 1 || fd < 0) {
		r = INVALID_VALUE;
		goto out;
	}
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	n = readlink(path, link, sizeof link - 1);
	if (n < 0 || fstat(fd, &st) != 0) {
		r = INVALID_VALUE;
		goto out;
	}
	link[n] = 0;
	if (sscanf(link, "/memfd:fakecuda-dev%d", &dev) != 1 || !valid_dev(dev) || st.st_size <= 0 ||
	    (size_t)st.st_size % GRANULE != 0) {
		r = INVALID_VALUE; /* not an allocation this fake exported */
		goto out;
	}
	dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	ph = calloc(1, sizeof *ph);
	if (dup < 0 || ph == NULL) {
		if (dup >= 0)
			close(dup);
		free(ph);
		r = OUT_OF_MEMORY;
		goto out;
	}
	ph->fd = dup;
	ph->size = (size_t)st.st_size;
	ph->dev = dev;
	ph->handle_types = 1;
	ph->imported = 1;
	ph->refs = 1;
	ph->next = physs;
	physs = ph;
	vmm_imports++;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)ph;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemGetAllocationPropertiesFromHandle(CUmemAllocationProp *prop, CUmemGenericAllocationHandle h)
{
	CUresult r;
	struct phys *ph;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	ph = findphys(h);
	if (prop == NULL || ph == NULL) {
		r = INVALID_VALUE;
		goto out;
	}
	memset(prop, 0, sizeof *prop);
	prop->type = 1;
	prop->requestedHandleTypes = k.vmm_no_posix_fd ? 0 : ph->handle_types;
	prop->location.type = k.vmm_loc_type ? (int)k.vmm_loc_type : 1;
	prop->location.id = ph->dev + (int)k.wrong_ordinal;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuMemRetainAllocationHandle(CUmemGenericAllocationHandle *h, void *addr)
{
	CUresult r;
	struct mapping *m;
	pthread_mutex_lock(&mu);
	r = need();
	if (r != OK)
		goto out;
	m = findmap((uintptr_t)addr);
	if (h == NULL || m == NULL) {
		r = INVALID_VALUE;
		goto out;
	}
	m->ph->refs++;
	*h = (CUmemGenericAllocationHandle)(uintptr_t)m->ph;
out:
	pthread_mutex_unlock(&mu);
	return r;
}

/* Streams and events: the fake runs everything at once, so they only count. */

static int handles;

CUresult cuStreamCreate(void **s, unsigned int flags)
{
	CUresult r;
	(void)flags;
	pthread_mutex_lock(&mu);
	r = need();
	if (r == OK)
		*s = &handles;
	pthread_mutex_unlock(&mu);
	return r;
}

static CUresult ctxcall(void)
{
	CUresult r;
	pthread_mutex_lock(&mu);
	r = need();
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult cuStreamDestroy_v2(void *s)
{
	(void)s;
	return ctxcall();
}

CUresult cuStreamSynchronize(void *s)
{
	(void)s;
	return ctxcall();
}

CUresult cuEventCreate(void **e, unsigned int flags)
{
	(void)flags;
	*e = &handles;
	return ctxcall();
}

CUresult cuEventRecord(void *e, void *s)
{
	(void)e;
	(void)s;
	return ctxcall();
}

CUresult cuEventSynchronize(void *e)
{
	(void)e;
	return ctxcall();
}

CUresult cuEventDestroy_v2(void *e)
{
	(void)e;
	return ctxcall();
}

/* Modules and the kernel. */

static int module, function;

CUresult cuModuleLoadData(void **m, const void *image)
{
	CUresult r = ctxcall();
	if (r != OK)
		return r;
	if (k.module_error)
		return (CUresult)k.module_error;
	if (image == NULL || strstr((const char *)image, ".entry leafhash") == NULL)
		return 200; /* INVALID_IMAGE */
	*m = &module;
	return OK;
}

CUresult cuModuleUnload(void *m)
{
	if (m != &module)
		return INVALID_HANDLE;
	return ctxcall();
}

CUresult cuModuleGetFunction(void **f, void *m, const char *name)
{
	CUresult r = ctxcall();
	if (r != OK)
		return r;
	if (m != &module)
		return INVALID_HANDLE;
	if (strcmp(name, "leafhash") != 0)
		return NOT_FOUND;
	*f = &function;
	return OK;
}

CUresult cuLaunchKernel(void *f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                        unsigned int by, unsigned int bz, unsigned int shared, void *stream, void **params,
                        void **extra)
{
	CUresult r;
	lh_u64 data, size, chunk, idx, n, out, threads, t;
	(void)stream;
	pthread_mutex_lock(&mu);
	r = need();
	if (r == OK && (f != &function || params == NULL || extra != NULL || gy != 1 || gz != 1 || by != 1 ||
	                bz != 1 || shared != 0 || bx == 0 || bx > 1024))
		r = INVALID_VALUE;
	if (r == OK && k.launch_fail) {
		lost[current->dev] = 1;
		r = LAUNCH_FAILED;
	}
	if (r == OK && k.lost_after > 0 && launches - lost_base >= k.lost_after) {
		lost[current->dev] = 1; /* reported by the next call, like an async fault */
		pthread_mutex_unlock(&mu);
		return OK;
	}
	if (r != OK) {
		pthread_mutex_unlock(&mu);
		return r;
	}
	launches++;
	data = *(lh_u64 *)params[0];
	size = *(lh_u64 *)params[1];
	chunk = *(lh_u64 *)params[2];
	idx = *(lh_u64 *)params[3];
	n = *(lh_u64 *)params[4];
	out = *(lh_u64 *)params[5];
	if (!checkdev(data, size) || !checkdev(idx, n * 8) || !checkdev(out, n * 32)) {
		pthread_mutex_unlock(&mu);
		return ILLEGAL_ADDRESS;
	}
	pthread_mutex_unlock(&mu);
	threads = (lh_u64)gx * bx;
	for (t = 0; t < threads; t++)
		lh_thread(t, (const lh_u8 *)(uintptr_t)data, size, chunk, (const lh_u64 *)(uintptr_t)idx, n,
		          (lh_u8 *)(uintptr_t)out);
	return OK;
}

/* NVML. A device handle is the address of nvdev[index]. */

typedef int nvmlReturn_t;
static int nvdev[MAXDEV];

static int nvidx(void *h)
{
	int *p = h;
	if (p < nvdev || p >= nvdev + MAXDEV || p - nvdev >= k.devices)
		return -1;
	return (int)(p - nvdev);
}

nvmlReturn_t nvmlInit_v2(void) { return (nvmlReturn_t)k.nvml_init_error; }
nvmlReturn_t nvmlShutdown(void) { return 0; }

nvmlReturn_t nvmlSystemGetDriverVersion(char *s, unsigned int n)
{
	snprintf(s, n, "550.54.15-fake");
	return 0;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, void **h)
{
	char s[64];
	for (int d = 0; d < k.devices && d < MAXDEV; d++) {
		uuid_string(d, s, sizeof s);
		if (strcmp(s, uuid) == 0) {
			*h = &nvdev[d];
			return 0;
		}
	}
	return 6; /* NOT_FOUND */
}

nvmlReturn_t nvmlDeviceGetName(void *h, char *s, unsigned int n)
{
	int d = nvidx(h);
	if (d < 0)
		return 2;
	snprintf(s, n, "NVIDIA Fake H100 %d", d);
	return 0;
}

nvmlReturn_t nvmlDeviceGetUUID(void *h, char *s, unsigned int n)
{
	int d = nvidx(h);
	if (d < 0)
		return 2;
	uuid_string(d, s, n);
	return 0;
}

typedef struct {
	unsigned int version;
	unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *h, nvmlMemory_v2_t *m)
{
	int d = nvidx(h);
	if (d < 0)
		return 2;
	if (m->version != (unsigned int)(sizeof(nvmlMemory_v2_t) | (2 << 24)))
		return 25; /* ARGUMENT_VERSION_MISMATCH */
	pthread_mutex_lock(&mu);
	m->total = (unsigned long long)k.total_mib << 20;
	m->reserved = 1 << 20;
	m->used = used[d] + m->reserved;
	m->free = m->total > m->used ? m->total - m->used : 0;
	pthread_mutex_unlock(&mu);
	return 0;
}

nvmlReturn_t nvmlDeviceGetEccMode(void *h, int *cur, int *pending)
{
	if (nvidx(h) < 0)
		return 2;
	*cur = 1;
	*pending = 1;
	return 0;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(void *h, int errtype, int counter, unsigned long long *n)
{
	if (nvidx(h) < 0)
		return 2;
	*n = (unsigned long long)(errtype * 10 + counter + 1);
	return 0;
}

nvmlReturn_t nvmlDeviceGetRemappedRows(void *h, unsigned int *corr, unsigned int *unc, unsigned int *pending,
                                       unsigned int *failed)
{
	if (nvidx(h) < 0)
		return 2;
	*corr = 2;
	*unc = 0;
	*pending = 0;
	*failed = 0;
	return 0;
}

typedef struct {
	unsigned int pid;
	unsigned long long usedGpuMemory;
	unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *h, unsigned int *count, nvmlProcessInfo_t *p)
{
	int d = nvidx(h);
	if (d < 0)
		return 2;
	if (*count < 1 || p == NULL) {
		*count = 1;
		return 7; /* INSUFFICIENT_SIZE */
	}
	*count = 1;
	p[0].pid = 4242;
	p[0].usedGpuMemory = 64ull << 20;
	p[0].gpuInstanceId = 0xffffffff;
	p[0].computeInstanceId = 0xffffffff;
	return 0;
}
