/*
 * ward's one native function: madvise(MADV_DONTNEED) over a range of this process's own
 * read-only file mappings, so that the pages it does not use (the node binary's start-up code
 * and data, above all) stop counting in its resident set. Node 24 has no way to call madvise
 * from JavaScript.
 *
 * Which ranges are safe is decided by the caller (src/lib/file-pages.ts, from
 * /proc/self/smaps: private, not writable, file-backed, no anonymous copy-on-write page), where
 * dropping a page only means reading it back from the file on its next use. This function
 * checks what it can see, page alignment and order, and reports errno instead of throwing.
 *
 * Built by bin/build-native.js (npm's install step) when a C compiler is there; without it
 * ward runs as before and reports the trimming as unavailable.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

/* dontneed(start, end): 0, or the errno of a refused range (EINVAL for a malformed one). */
static napi_value dontneed(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  double start = -1, end = -1;
  int result = EINVAL;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 2 &&
      napi_get_value_double(env, argv[0], &start) == napi_ok &&
      napi_get_value_double(env, argv[1], &end) == napi_ok) {
    const double page = (double)sysconf(_SC_PAGESIZE);
    /* Whole pages of the user address space (x86-64 and arm64: below 2^48, exact in a double). */
    if (start > 0 && end > start && end <= 281474976710656.0 && start == (double)(uint64_t)start &&
        end == (double)(uint64_t)end && (uint64_t)start % (uint64_t)page == 0 && (uint64_t)end % (uint64_t)page == 0) {
      result = madvise((void *)(uintptr_t)start, (size_t)(end - start), MADV_DONTNEED) == 0 ? 0 : errno;
    }
  }
  napi_value out;
  napi_create_int32(env, result, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "dontneed", NAPI_AUTO_LENGTH, dontneed, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "dontneed", fn) != napi_ok) return NULL;
  return exports;
}
