/*
 * kdedup - libFuzzer target for the receipt parser: any bytes either parse
 * or are refused, never a crash or a read outside them; and what parses is
 * written back as the same bytes (up to any text that follows).
 */
#include "sidecar/receipt.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char *copy = malloc(size ? size : 1); /* exact-size heap buffer for ASan */
    char again[1024];
    kd_receipt r;
    size_t n;

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (kd_receipt_parse(copy, size, &r)) {
        n = kd_receipt_format(&r, again, sizeof(again));
        if (n > size || memcmp(again, copy, n) != 0 || (n < size && copy[n] != ' '))
            abort();
    }
    free(copy);
    return 0;
}
