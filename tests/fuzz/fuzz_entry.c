/*
 * kdedup - libFuzzer target for the entry decoder: any bytes either decode
 * or give KD_ERR_SERIALIZATION, never a crash or an out-of-bounds read; and
 * whatever decodes re-encodes to the same bytes (one encoding per entry).
 */
#include "dedup/entry.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    unsigned char *copy = malloc(size ? size : 1); /* exact-size heap buffer for ASan */
    void *again = NULL;
    size_t again_len = 0;
    kd_entry e;

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (kd_entry_decode(copy, size, &e) == KD_OK) {
        if (kd_entry_encode_alloc(&e, &again, &again_len) != KD_OK || again_len != size ||
            memcmp(again, copy, size) != 0)
            abort();
        free(again);
    }
    free(copy);
    return 0;
}
