// The HDF5 calls behind CHDF5.h. Each entry point checks every HDF5 call, releases every handle it
// opened on all paths (the `done:` label), and reports the first failure through fail().
#include "CHDF5.h"

#include <hdf5/serial/hdf5.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// HDF5's metadata checksum (Jenkins' lookup3), exported by the library but not declared in its public headers.
uint32_t H5_checksum_metadata(const void *data, size_t len, uint32_t initval);

// MARK: - Errors

/// Turns off HDF5's printing of its error stack to stderr (per call: cheap, and HDF5 may reset it).
static void quiet(void) {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/// Keeps the innermost non-empty description of the error stack.
static herr_t innermost(unsigned n, const H5E_error2_t *entry, void *data) {
    (void)n;
    if (entry->desc != NULL && entry->desc[0] != '\0') {
        *(const char **)data = entry->desc;
    }
    return 0;
}

/// Writes "<what>: <HDF5's innermost message>" into err and clears the stack; returns -1.
static int fail(char *err, size_t errlen, const char *format, ...) {
    if (err == NULL || errlen == 0) {
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    va_list args;
    va_start(args, format);
    int used = vsnprintf(err, errlen, format, args);
    va_end(args);
    const char *detail = NULL;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, (void *)&detail);
    if (detail != NULL && used >= 0 && (size_t)used < errlen) {
        snprintf(err + used, errlen - (size_t)used, ": %s", detail);
    }
    H5Eclear2(H5E_DEFAULT);
    return -1;
}

// MARK: - String lists

/// A growing buffer of NUL-terminated strings.
typedef struct {
    char *bytes;
    size_t length;
    size_t capacity;
    size_t count;
} string_list;

/// Appends the first `n` bytes of `s` (stopping at a NUL) as one string; 0 or -1 when out of memory.
static int append(string_list *list, const char *s, size_t n) {
    size_t len = strnlen(s, n);
    if (list->length + len + 1 > list->capacity) {
        size_t capacity = (list->capacity + len + 1) * 2;
        char *grown = realloc(list->bytes, capacity);
        if (grown == NULL) return -1;
        list->bytes = grown;
        list->capacity = capacity;
    }
    memcpy(list->bytes + list->length, s, len);
    list->bytes[list->length + len] = '\0';
    list->length += len + 1;
    list->count += 1;
    return 0;
}

/// Removes trailing spaces from the last string (fixed-length strings padded with spaces).
static void trim_last(string_list *list) {
    if (list->count == 0) return;
    size_t end = list->length - 1;  // index of the terminating NUL
    size_t start = end;
    while (start > 0 && list->bytes[start - 1] != '\0') start--;
    while (end > start && list->bytes[end - 1] == ' ') end--;
    list->bytes[end] = '\0';
    list->length = end + 1;
}

// MARK: - Reading

int chdf5_is_hdf5(const char *path) {
    quiet();
    htri_t result = H5Fis_hdf5(path);
    H5Eclear2(H5E_DEFAULT);
    return result > 0 ? 1 : (result == 0 ? 0 : -1);
}

int64_t chdf5_open(const char *path, char *err, size_t errlen) {
    quiet();
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return fail(err, errlen, "H5Fopen(\"%s\")", path);
    return (int64_t)file;
}

int chdf5_close(int64_t file, char *err, size_t errlen) {
    quiet();
    if (H5Fclose((hid_t)file) < 0) return fail(err, errlen, "H5Fclose");
    return 0;
}

int chdf5_object_kind(int64_t file, const char *name, char *err, size_t errlen) {
    quiet();
    // Check each path prefix: H5Lexists fails (rather than answering 0) when an intermediate is missing.
    size_t n = strlen(name);
    char *prefix = malloc(n + 1);
    if (prefix == NULL) return fail(err, errlen, "out of memory");
    for (size_t i = 0; i <= n; i++) {
        if ((i == n || name[i] == '/') && i > 0 && name[i - 1] != '/') {
            memcpy(prefix, name, i);
            prefix[i] = '\0';
            htri_t exists = H5Lexists((hid_t)file, prefix, H5P_DEFAULT);
            if (exists < 0) {
                free(prefix);
                return fail(err, errlen, "H5Lexists(\"%s\")", name);
            }
            if (exists == 0) {
                free(prefix);
                return CHDF5_KIND_MISSING;
            }
        }
    }
    free(prefix);
    hid_t object = H5Oopen((hid_t)file, name, H5P_DEFAULT);
    if (object < 0) return fail(err, errlen, "H5Oopen(\"%s\")", name);
    H5I_type_t type = H5Iget_type(object);
    H5Oclose(object);
    switch (type) {
    case H5I_GROUP: return CHDF5_KIND_GROUP;
    case H5I_DATASET: return CHDF5_KIND_DATASET;
    default: return CHDF5_KIND_OTHER;
    }
}

/// The chdf5_class of an HDF5 datatype.
static int class_of(hid_t type) {
    switch (H5Tget_class(type)) {
    case H5T_FLOAT: return CHDF5_CLASS_FLOAT;
    case H5T_INTEGER: return CHDF5_CLASS_INTEGER;
    case H5T_STRING: return CHDF5_CLASS_STRING;
    default: return CHDF5_CLASS_OTHER;
    }
}

int chdf5_describe_dataset(int64_t file, const char *name, chdf5_dataset_info *info, char *err, size_t errlen) {
    quiet();
    int status = -1;
    hid_t dataset = -1, space = -1, type = -1;
    memset(info, 0, sizeof *info);
    if ((dataset = H5Dopen2((hid_t)file, name, H5P_DEFAULT)) < 0) {
        fail(err, errlen, "H5Dopen2(\"%s\")", name);
        goto done;
    }
    if ((space = H5Dget_space(dataset)) < 0 || (type = H5Dget_type(dataset)) < 0) {
        fail(err, errlen, "H5Dget_space/H5Dget_type(\"%s\")", name);
        goto done;
    }
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0 || rank > CHDF5_MAX_RANK) {
        fail(err, errlen, "dataset \"%s\" has an unsupported rank (%d)", name, rank);
        goto done;
    }
    hsize_t dims[CHDF5_MAX_RANK];
    if (H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        fail(err, errlen, "H5Sget_simple_extent_dims(\"%s\")", name);
        goto done;
    }
    info->rank = rank;
    for (int i = 0; i < rank; i++) info->dims[i] = (uint64_t)dims[i];
    info->type_class = class_of(type);
    info->type_size = H5Tget_size(type);
    status = 0;
done:
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (dataset >= 0) H5Dclose(dataset);
    return status;
}

int chdf5_read_floats(int64_t file, const char *name, float *out, char *err, size_t errlen) {
    quiet();
    hid_t dataset = H5Dopen2((hid_t)file, name, H5P_DEFAULT);
    if (dataset < 0) return fail(err, errlen, "H5Dopen2(\"%s\")", name);
    herr_t status = H5Dread(dataset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out);
    H5Dclose(dataset);
    if (status < 0) return fail(err, errlen, "H5Dread(\"%s\") as float", name);
    return 0;
}

int chdf5_read_float_rows(int64_t file, const char *name, uint64_t first, uint64_t count, float *out, char *err,
                          size_t errlen) {
    quiet();
    int status = -1;
    hid_t dataset = -1, space = -1, memory = -1;
    if ((dataset = H5Dopen2((hid_t)file, name, H5P_DEFAULT)) < 0) {
        fail(err, errlen, "H5Dopen2(\"%s\")", name);
        goto done;
    }
    if ((space = H5Dget_space(dataset)) < 0) {
        fail(err, errlen, "H5Dget_space(\"%s\")", name);
        goto done;
    }
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[2] = {0, 1};
    if (rank < 1 || rank > 2 || H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        fail(err, errlen, "dataset \"%s\" is not 1-D or 2-D", name);
        goto done;
    }
    if (first > dims[0] || count > dims[0] - first) {
        fail(err, errlen, "rows %llu..<%llu are outside dataset \"%s\" of %llu rows", (unsigned long long)first,
             (unsigned long long)(first + count), name, (unsigned long long)dims[0]);
        goto done;
    }
    if (count == 0) {
        status = 0;
        goto done;
    }
    hsize_t start[2] = {(hsize_t)first, 0};
    hsize_t block[2] = {(hsize_t)count, rank == 2 ? dims[1] : 1};
    if (H5Sselect_hyperslab(space, H5S_SELECT_SET, start, NULL, block, NULL) < 0 ||
        (memory = H5Screate_simple(rank, block, NULL)) < 0) {
        fail(err, errlen, "H5Sselect_hyperslab(\"%s\", rows %llu..<%llu)", name, (unsigned long long)first,
             (unsigned long long)(first + count));
        goto done;
    }
    if (H5Dread(dataset, H5T_NATIVE_FLOAT, memory, space, H5P_DEFAULT, out) < 0) {
        fail(err, errlen, "H5Dread(\"%s\", rows %llu..<%llu) as float", name, (unsigned long long)first,
             (unsigned long long)(first + count));
        goto done;
    }
    status = 0;
done:
    if (memory >= 0) H5Sclose(memory);
    if (space >= 0) H5Sclose(space);
    if (dataset >= 0) H5Dclose(dataset);
    return status;
}

int chdf5_read_strings(int64_t file, const char *object, const char *attribute, char **buffer, size_t *length,
                       size_t *count, char *err, size_t errlen) {
    quiet();
    int status = -1;
    hid_t holder = -1, type = -1, space = -1, memtype = -1;
    char **pointers = NULL;
    char *fixed = NULL;
    string_list list = {0};
    const char *what = attribute != NULL ? attribute : object;
    if (attribute != NULL) {
        htri_t exists = H5Aexists_by_name((hid_t)file, object, attribute, H5P_DEFAULT);
        if (exists < 0) return fail(err, errlen, "H5Aexists_by_name(\"%s\", \"%s\")", object, attribute);
        if (exists == 0) return 1;
        holder = H5Aopen_by_name((hid_t)file, object, attribute, H5P_DEFAULT, H5P_DEFAULT);
        if (holder < 0) return fail(err, errlen, "H5Aopen_by_name(\"%s\", \"%s\")", object, attribute);
        type = H5Aget_type(holder);
        space = H5Aget_space(holder);
    } else {
        htri_t exists = H5Lexists((hid_t)file, object, H5P_DEFAULT);
        if (exists <= 0) {
            H5Eclear2(H5E_DEFAULT);
            return 1;
        }
        holder = H5Dopen2((hid_t)file, object, H5P_DEFAULT);
        if (holder < 0) return 1;  // a group or other object of that name: not a string dataset
        type = H5Dget_type(holder);
        space = H5Dget_space(holder);
    }
    if (type < 0 || space < 0) {
        fail(err, errlen, "cannot get the type and shape of \"%s\"", what);
        goto done;
    }
    if (H5Tget_class(type) != H5T_STRING) {
        fail(err, errlen, "\"%s\" does not hold strings", what);
        goto done;
    }
    if (H5Sget_simple_extent_ndims(space) > 1) {
        fail(err, errlen, "\"%s\" is not a 1-D string array", what);
        goto done;
    }
    hssize_t n = H5Sget_simple_extent_npoints(space);
    if (n < 0) {
        fail(err, errlen, "H5Sget_simple_extent_npoints(\"%s\")", what);
        goto done;
    }
    herr_t read_status;
    if (H5Tis_variable_str(type) > 0) {
        memtype = H5Tcopy(H5T_C_S1);
        if (memtype < 0 || H5Tset_size(memtype, H5T_VARIABLE) < 0) {
            fail(err, errlen, "cannot make a variable-length string type");
            goto done;
        }
        H5Tset_cset(memtype, H5Tget_cset(type));
        pointers = calloc((size_t)n + 1, sizeof(char *));
        if (pointers == NULL) {
            fail(err, errlen, "out of memory");
            goto done;
        }
        read_status = attribute != NULL ? H5Aread(holder, memtype, pointers)
                                        : H5Dread(holder, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, pointers);
        if (read_status < 0) {
            fail(err, errlen, "cannot read the strings of \"%s\"", what);
            goto done;
        }
        for (hssize_t i = 0; i < n; i++) {
            const char *s = pointers[i] != NULL ? pointers[i] : "";
            if (append(&list, s, strlen(s)) < 0) {
                fail(err, errlen, "out of memory");
                break;
            }
        }
        H5Dvlen_reclaim(memtype, space, H5P_DEFAULT, pointers);
        if (list.count != (size_t)n) goto done;
    } else {
        size_t size = H5Tget_size(type);
        int space_padded = H5Tget_strpad(type) == H5T_STR_SPACEPAD;
        memtype = H5Tcopy(type);
        fixed = malloc(size * (size_t)n + 1);
        if (memtype < 0 || fixed == NULL) {
            fail(err, errlen, "out of memory");
            goto done;
        }
        read_status = attribute != NULL ? H5Aread(holder, memtype, fixed)
                                        : H5Dread(holder, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, fixed);
        if (read_status < 0) {
            fail(err, errlen, "cannot read the strings of \"%s\"", what);
            goto done;
        }
        for (hssize_t i = 0; i < n; i++) {
            if (append(&list, fixed + (size_t)i * size, size) < 0) {
                fail(err, errlen, "out of memory");
                goto done;
            }
            if (space_padded) trim_last(&list);
        }
    }
    *buffer = list.bytes;
    *length = list.length;
    *count = list.count;
    list.bytes = NULL;
    status = 0;
done:
    free(list.bytes);
    free(fixed);
    free(pointers);
    if (memtype >= 0) H5Tclose(memtype);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (holder >= 0) {
        if (attribute != NULL) H5Aclose(holder); else H5Dclose(holder);
    }
    return status;
}

/// H5Literate callback: appends each link name to the string_list.
static herr_t collect_name(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    (void)group;
    (void)info;
    return append((string_list *)data, name, strlen(name)) < 0 ? -1 : 0;
}

int chdf5_list_members(int64_t file, const char *group, char **buffer, size_t *length, size_t *count, char *err,
                       size_t errlen) {
    quiet();
    hid_t handle = H5Gopen2((hid_t)file, group, H5P_DEFAULT);
    if (handle < 0) return fail(err, errlen, "H5Gopen2(\"%s\")", group);
    H5_index_t index = H5_INDEX_NAME;
    hid_t plist = H5Gget_create_plist(handle);
    unsigned flags = 0;
    if (plist >= 0 && H5Pget_link_creation_order(plist, &flags) >= 0 && (flags & H5P_CRT_ORDER_INDEXED)) {
        index = H5_INDEX_CRT_ORDER;
    }
    if (plist >= 0) H5Pclose(plist);
    string_list list = {0};
    hsize_t position = 0;
    herr_t status = H5Literate(handle, index, H5_ITER_INC, &position, collect_name, &list);
    H5Gclose(handle);
    if (status < 0) {
        free(list.bytes);
        return fail(err, errlen, "H5Literate(\"%s\")", group);
    }
    *buffer = list.bytes;
    *length = list.length;
    *count = list.count;
    return 0;
}

void chdf5_free(void *buffer) { free(buffer); }

// MARK: - Writing

int64_t chdf5_create(const char *path, char *err, size_t errlen) {
    quiet();
    // HDF5 1.8 object headers and later: attributes larger than 64 KiB (many columns) go to dense storage.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return fail(err, errlen, "H5Pset_libver_bounds");
    }
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) return fail(err, errlen, "H5Fcreate(\"%s\")", path);
    return (int64_t)file;
}

int64_t chdf5_create_in_memory(char *err, size_t errlen) {
    quiet();
    // The core driver without a backing store: HDF5 never touches the disk; chdf5_file_image hands the
    // bytes to the caller, which writes them itself (and reports a full disk as a write error).
    static unsigned long serial = 0;
    char name[64];
    snprintf(name, sizeof name, "hrtrain-in-memory-%lu.h5", ++serial);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, (size_t)1 << 20, 0) < 0 ||
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_LATEST) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        return fail(err, errlen, "H5Pset_fapl_core");
    }
    hid_t file = H5Fcreate(name, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) return fail(err, errlen, "H5Fcreate (in memory)");
    return (int64_t)file;
}

int chdf5_file_image(int64_t file, void **buffer, size_t *length, char *err, size_t errlen) {
    quiet();
    *buffer = NULL;
    *length = 0;
    if (H5Fflush((hid_t)file, H5F_SCOPE_GLOBAL) < 0) return fail(err, errlen, "H5Fflush (in memory)");
    ssize_t size = H5Fget_file_image((hid_t)file, NULL, 0);
    if (size <= 0) return fail(err, errlen, "H5Fget_file_image");
    void *bytes = malloc((size_t)size);
    if (bytes == NULL) return fail(err, errlen, "out of memory for the HDF5 file image (%zd bytes)", size);
    if (H5Fget_file_image((hid_t)file, bytes, (size_t)size) != size) {
        free(bytes);
        return fail(err, errlen, "H5Fget_file_image");
    }
    // H5Fget_file_image clears the superblock's "open for writing" flags in the copy but (HDF5 1.10) does not
    // update the checksum of a version 2/3 superblock, so the image would not open: recompute it.
    unsigned char *superblock = bytes;
    if (size > 12 && superblock[8] >= 2) {
        size_t covered = 12 + 4 * (size_t)superblock[9];  // base, extension, EOF and root addresses
        if ((size_t)size >= covered + 4) {
            uint32_t checksum = H5_checksum_metadata(superblock, covered, 0);
            for (int i = 0; i < 4; i++) superblock[covered + (size_t)i] = (unsigned char)(checksum >> (8 * i));
        }
    }
    *buffer = bytes;
    *length = (size_t)size;
    return 0;
}

int chdf5_write_floats(int64_t file, const char *name, int rank, const uint64_t *dims, const float *values,
                       char *err, size_t errlen) {
    quiet();
    int status = -1;
    hid_t lcpl = -1, space = -1, data = -1;
    hsize_t sizes[CHDF5_MAX_RANK];
    hsize_t elements = 1;
    if (rank < 0 || rank > CHDF5_MAX_RANK) return fail(err, errlen, "dataset \"%s\": unsupported rank %d", name, rank);
    for (int i = 0; i < rank; i++) {
        sizes[i] = (hsize_t)dims[i];
        elements *= sizes[i];
    }
    if ((lcpl = H5Pcreate(H5P_LINK_CREATE)) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0) {
        fail(err, errlen, "H5Pset_create_intermediate_group");
        goto done;
    }
    if ((space = H5Screate_simple(rank, sizes, NULL)) < 0) {
        fail(err, errlen, "H5Screate_simple(\"%s\")", name);
        goto done;
    }
    if ((data = H5Dcreate2((hid_t)file, name, H5T_IEEE_F32LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
        fail(err, errlen, "H5Dcreate2(\"%s\")", name);
        goto done;
    }
    if (elements > 0 && H5Dwrite(data, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values) < 0) {
        fail(err, errlen, "H5Dwrite(\"%s\")", name);
        goto done;
    }
    status = 0;
done:
    if (data >= 0) H5Dclose(data);
    if (space >= 0) H5Sclose(space);
    if (lcpl >= 0) H5Pclose(lcpl);
    return status;
}

int chdf5_write_strings(int64_t file, const char *object, const char *attribute, const char *const *strings,
                        uint64_t count, char *err, size_t errlen) {
    quiet();
    int status = -1;
    hid_t strtype = -1, space = -1, lcpl = -1, holder = -1;
    hsize_t size = (hsize_t)count;
    const char *what = attribute != NULL ? attribute : object;
    if ((strtype = H5Tcopy(H5T_C_S1)) < 0 || H5Tset_size(strtype, H5T_VARIABLE) < 0 ||
        H5Tset_cset(strtype, H5T_CSET_UTF8) < 0) {
        fail(err, errlen, "cannot make a variable-length UTF-8 string type");
        goto done;
    }
    if ((space = H5Screate_simple(1, &size, NULL)) < 0) {
        fail(err, errlen, "H5Screate_simple(\"%s\")", what);
        goto done;
    }
    if (attribute != NULL) {
        if ((holder = H5Acreate_by_name((hid_t)file, object, attribute, strtype, space, H5P_DEFAULT, H5P_DEFAULT,
                                        H5P_DEFAULT)) < 0 ||
            H5Awrite(holder, strtype, strings) < 0) {
            fail(err, errlen, "cannot write the attribute \"%s\" of \"%s\"", attribute, object);
            goto done;
        }
    } else {
        if ((lcpl = H5Pcreate(H5P_LINK_CREATE)) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
            (holder = H5Dcreate2((hid_t)file, object, strtype, space, lcpl, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
            H5Dwrite(holder, strtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, strings) < 0) {
            fail(err, errlen, "cannot write the string dataset \"%s\"", object);
            goto done;
        }
    }
    status = 0;
done:
    if (holder >= 0) {
        if (attribute != NULL) H5Aclose(holder); else H5Dclose(holder);
    }
    if (lcpl >= 0) H5Pclose(lcpl);
    if (space >= 0) H5Sclose(space);
    if (strtype >= 0) H5Tclose(strtype);
    return status;
}
