/*
 * kdedup - libFuzzer target for the config loader: any bytes either parse
 * into a config or are refused with a message, never a crash, a leak or an
 * out-of-bounds read; a refused file leaves no config behind, and a parsed
 * one has what the rest of kdedup relies on (at least one route, each with
 * valid topic names, a store path).
 */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    char *copy = malloc(size ? size : 1); /* exact-size heap buffer for ASan */
    char err[1024] = "";
    kd_config *cfg;

    if (!copy)
        return 0;
    memcpy(copy, data, size);
    cfg = kd_config_parse(copy, size, "fuzz.json", err, sizeof(err));
    if (!cfg) {
        if (!err[0]) /* every refusal says why */
            abort();
    } else {
        if (cfg->nroutes == 0 || !cfg->store_path || !*cfg->store_path)
            abort();
        for (size_t i = 0; i < cfg->nroutes; i++)
            if (!kd_config_valid_topic(cfg->routes[i].from) ||
                !kd_config_valid_topic(cfg->routes[i].to))
                abort();
        kd_config_destroy(cfg);
    }
    free(copy);
    return 0;
}
