/* pp_io.h: the file formats shared by ort_c, ort_cpp and torchscript_cpp (valid C11 and C++17).
 *
 * Input file (all fields little-endian):
 *   char     magic[4] = "PPIN"
 *   uint32   version  = 1
 *   uint32   batch B, joints J (21), channels C (6), latent dim D
 *   float32  poses[B*J*C]   (row-major (B, J, C): 6D rotations)
 *   float32  z[B*D]         (row-major (B, D): latents)
 *
 * Output file:
 *   char     magic[4] = "PPOT"
 *   uint32   version  = 1
 *   uint32   count    number of arrays that follow
 *   count x { uint32 name_len; char name[name_len] ("graph/output", no NUL);
 *             uint32 ndim; int64 dims[ndim]; float32 data[prod(dims)] (row-major) }
 *
 * Errors: pp_die() prints "PROG: message" to stderr, removes a half-written output file and exits 1.
 * Resources still held at that point are left to the OS: these are one-shot command-line programs.
 */
#ifndef PP_IO_H
#define PP_IO_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *pp_prog = "pp";
static const char *pp_out_path = NULL;  /* set while the output file is being written */
static FILE *pp_out = NULL;
static uint32_t pp_out_count = 0;

static void pp_die(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "%s: ", pp_prog);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  if (pp_out) fclose(pp_out);
  if (pp_out_path) remove(pp_out_path);
  exit(1);
}

typedef struct {
  uint32_t batch, joints, channels, dim;
  float *poses; /* batch * joints * channels */
  float *z;     /* batch * dim */
} pp_input;

static void pp_read_exact(FILE *f, void *dst, size_t bytes, const char *path, const char *what) {
  if (fread(dst, 1, bytes, f) != bytes) pp_die("%s: truncated file while reading %s", path, what);
}

static pp_input pp_read_input(const char *path) {
  const uint32_t one = 1;
  if (*(const unsigned char *)&one != 1) pp_die("big-endian hosts are not supported");
  FILE *f = fopen(path, "rb");
  if (!f) pp_die("cannot open input file %s", path);
  char magic[4];
  uint32_t head[5];
  pp_read_exact(f, magic, 4, path, "the magic");
  if (memcmp(magic, "PPIN", 4) != 0) pp_die("%s: not an input file (magic is not PPIN)", path);
  pp_read_exact(f, head, sizeof head, path, "the header");
  if (head[0] != 1) pp_die("%s: unsupported input version %u", path, (unsigned)head[0]);
  pp_input in;
  in.batch = head[1]; in.joints = head[2]; in.channels = head[3]; in.dim = head[4];
  if (in.batch == 0 || in.joints == 0 || in.channels == 0 || in.dim == 0 || in.batch > (1u << 24) ||
      in.joints > 4096 || in.channels > 4096 || in.dim > 65536)
    pp_die("%s: implausible header: batch %u, joints %u, channels %u, dim %u", path, (unsigned)in.batch,
           (unsigned)in.joints, (unsigned)in.channels, (unsigned)in.dim);
  size_t n_poses = (size_t)in.batch * in.joints * in.channels, n_z = (size_t)in.batch * in.dim;
  in.poses = (float *)malloc(n_poses * sizeof(float));
  in.z = (float *)malloc(n_z * sizeof(float));
  if (!in.poses || !in.z) pp_die("out of memory");
  pp_read_exact(f, in.poses, n_poses * sizeof(float), path, "poses");
  pp_read_exact(f, in.z, n_z * sizeof(float), path, "z");
  if (fgetc(f) != EOF) pp_die("%s: trailing bytes after z", path);
  fclose(f);
  return in;
}

static void pp_write_or_die(const void *src, size_t bytes) {
  if (fwrite(src, 1, bytes, pp_out) != bytes) pp_die("%s: write failed", pp_out_path);
}

static void pp_open_output(const char *path) {
  pp_out = fopen(path, "wb");
  if (!pp_out) pp_die("cannot create output file %s", path);
  pp_out_path = path;
  const uint32_t head[2] = {1, 0}; /* version, count (patched by pp_close_output) */
  pp_write_or_die("PPOT", 4);
  pp_write_or_die(head, sizeof head);
}

/* One array "graph/output" of float32 with the given shape. */
static void pp_write_array(const char *graph, const char *output, const int64_t *dims, size_t ndim,
                           const float *data) {
  char name[256];
  int len = snprintf(name, sizeof name, "%s/%s", graph, output);
  if (len < 0 || (size_t)len >= sizeof name) pp_die("array name too long: %s/%s", graph, output);
  size_t n = 1;
  for (size_t i = 0; i < ndim; i++) {
    if (dims[i] < 0) pp_die("%s: negative dimension", name);
    n *= (size_t)dims[i];
  }
  const uint32_t name_len = (uint32_t)len, nd = (uint32_t)ndim;
  pp_write_or_die(&name_len, sizeof name_len);
  pp_write_or_die(name, name_len);
  pp_write_or_die(&nd, sizeof nd);
  pp_write_or_die(dims, ndim * sizeof(int64_t));
  pp_write_or_die(data, n * sizeof(float));
  pp_out_count++;
}

static void pp_close_output(void) {
  if (fseek(pp_out, 8, SEEK_SET) != 0) pp_die("%s: seek failed", pp_out_path);
  pp_write_or_die(&pp_out_count, sizeof pp_out_count);
  if (fclose(pp_out) != 0) { pp_out = NULL; pp_die("%s: close failed", pp_out_path); }
  pp_out = NULL;
  pp_out_path = NULL;
}

#endif /* PP_IO_H */
