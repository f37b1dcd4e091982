// A small C API over HDF5 (Debian's serial build, 1.10) for hrtrain's table reader and writer.
//
// HDF5's own header is included only by chdf5.c: its type and property-list "constants" are macros that
// call H5open(), which Swift cannot import. Every function here silences HDF5's automatic error printing
// and, on failure, returns a negative value and writes one line (the failing call and HDF5's innermost
// message) into `err` (`errlen` bytes, always NUL-terminated). Serial HDF5 is not thread-safe: callers
// serialise all calls. Object names are HDF5 paths ("data", "group/x", "/").
#ifndef CHDF5_H
#define CHDF5_H

#include <stddef.h>
#include <stdint.h>

/// What a name in the file refers to.
typedef enum {
    CHDF5_KIND_MISSING = 0,
    CHDF5_KIND_GROUP = 1,
    CHDF5_KIND_DATASET = 2,
    CHDF5_KIND_OTHER = 3,
} chdf5_kind;

/// The element class of a dataset.
typedef enum {
    CHDF5_CLASS_FLOAT = 0,
    CHDF5_CLASS_INTEGER = 1,
    CHDF5_CLASS_STRING = 2,
    CHDF5_CLASS_OTHER = 3,
} chdf5_class;

/// The most dimensions chdf5_describe_dataset reports.
#define CHDF5_MAX_RANK 32

/// Shape and element type of a dataset.
typedef struct {
    int rank;
    uint64_t dims[CHDF5_MAX_RANK];
    int type_class;   // a chdf5_class
    size_t type_size; // bytes per element in the file
} chdf5_dataset_info;

/// 1 if the file has an HDF5 signature, 0 if not, -1 if it cannot be read.
int chdf5_is_hdf5(const char *path);

/// Opens a file read-only; returns its handle, or -1.
int64_t chdf5_open(const char *path, char *err, size_t errlen);

/// Creates (truncating) a file for writing; returns its handle, or -1.
int64_t chdf5_create(const char *path, char *err, size_t errlen);

/// Closes a handle from chdf5_open or chdf5_create, flushing a written file; 0 or -1.
int chdf5_close(int64_t file, char *err, size_t errlen);

/// What `name` refers to (a chdf5_kind), or -1 on error.
int chdf5_object_kind(int64_t file, const char *name, char *err, size_t errlen);

/// Fills `info` for dataset `name`; 0 on success, -1 on error (also when rank > CHDF5_MAX_RANK).
int chdf5_describe_dataset(int64_t file, const char *name, chdf5_dataset_info *info, char *err, size_t errlen);

/// Reads the whole numeric dataset `name`, converted to native float, into `out`; 0 or -1.
int chdf5_read_floats(int64_t file, const char *name, float *out, char *err, size_t errlen);

/// Reads rows [first, first + count) of the 1-D or 2-D numeric dataset `name` (a 2-D dataset's rows of every
/// column) through a hyperslab selection, converted to native float, into `out` (count × columns floats): only
/// those rows are read from the file. 0, or -1 (also when the rows lie outside the dataset).
int chdf5_read_float_rows(int64_t file, const char *name, uint64_t first, uint64_t count, float *out, char *err,
                          size_t errlen);

/// Reads a scalar or 1-D string array: attribute `attribute` of object `object`, or the dataset `object`
/// itself when `attribute` is NULL. On success (0) `*buffer` holds `*count` NUL-terminated strings back to
/// back (`*length` bytes, free with chdf5_free). Returns 1 if the attribute or dataset does not exist,
/// -1 on error (also when it holds no strings).
int chdf5_read_strings(int64_t file, const char *object, const char *attribute, char **buffer, size_t *length,
                       size_t *count, char *err, size_t errlen);

/// Lists the names of the links in group `group`, in creation order when the file tracks it, else in name
/// order. Same buffer convention and return values (0 or -1) as chdf5_read_strings.
int chdf5_list_members(int64_t file, const char *group, char **buffer, size_t *length, size_t *count, char *err,
                       size_t errlen);

/// Frees a buffer returned by chdf5_read_strings or chdf5_list_members.
void chdf5_free(void *buffer);

/// Creates an HDF5 file in memory (the core driver, no backing store); returns its handle, or -1.
int64_t chdf5_create_in_memory(char *err, size_t errlen);

/// Flushes an in-memory file and copies its bytes into a new buffer (`*length` bytes, free with chdf5_free).
/// Returns 0 or -1.
int chdf5_file_image(int64_t file, void **buffer, size_t *length, char *err, size_t errlen);

/// Writes a little-endian float32 dataset `name` of `rank` dimensions `dims` from C-order `values`,
/// creating missing intermediate groups. Returns 0 or -1.
int chdf5_write_floats(int64_t file, const char *name, int rank, const uint64_t *dims, const float *values,
                       char *err, size_t errlen);

/// Writes `count` strings as a 1-D variable-length UTF-8 string array: the attribute `attribute` of
/// object `object`, or the dataset `object` itself when `attribute` is NULL. Returns 0 or -1.
int chdf5_write_strings(int64_t file, const char *object, const char *attribute, const char *const *strings,
                        uint64_t count, char *err, size_t errlen);

#endif
