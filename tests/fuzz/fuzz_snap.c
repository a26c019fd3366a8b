/* SPDX-License-Identifier: MIT */
/*
 * fuzz_snap.c -- libFuzzer target for the snapshot loader (snap_read).
 *
 * Checksums would stop almost every mutation at the door, so an input is
 * used two ways:
 * - as an image: snap_read as is, then again with the header and footer
 *   checksums recomputed (reaches chunk headers, counts, frame handling);
 * - as a recipe (inputs not starting with 'S'): 9 u16 counts, then chunks
 *   of [section u8][items u8][len u16][raw bytes]; the target compresses
 *   each into a valid LZ4 frame and writes a correct header and footer, so
 *   the fuzzer reaches the item decoders and the engine's restore calls.
 * Whatever loads must pass eng_verify; nothing may crash or leak.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <xxhash.h>

#include "engine/eng.h"
#include "snapshot/snap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int64_t fixed_clock(void *ud) { (void)ud; return 1700000000000ll; }

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void load(const uint8_t *img, size_t len)
{
    struct eng_config cfg = {.history = 64, .session_ttl_ms = 3600000, .clock = fixed_clock};
    struct eng *e = eng_create(&cfg);
    if (!e)
        return;
    struct snap_err err;
    if (snap_read(e, img, len, &err) == SNAP_OK) {
        struct eng_err ee;
        if (eng_verify(e, &ee) != 0)
            abort();
    }
    eng_destroy(e);
}

static void fix(uint8_t *p, size_t len)
{
    if (len < 152)
        return;
    put_le(p + 112, XXH64(p, 112, 0), 8);
    put_le(p + len - 16, len, 8);
    put_le(p + len - 8, XXH64(p, len - 8, 0), 8);
}

static const char TAGS[6][5] = {"PLAT", "UAGT", "SHRT", "SESS", "USER", "TOTL"};

static void recipe(const uint8_t *d, size_t n)
{
    if (n < 18)
        return;
    size_t cap = 120 + 32 + n * 2 + 4096, len = 120;
    uint8_t *img = calloc(1, cap);
    if (!img)
        return;
    memcpy(img, "SHSTSNAP", 8);
    put_le(img + 8, 1, 4);
    put_le(img + 16, 64, 4);
    put_le(img + 20, 120, 4);
    put_le(img + 24, 3600000, 8);
    put_le(img + 32, 1700000000000ull, 8);
    for (int i = 0; i < 9; i++)
        put_le(img + 40 + 8 * i, (uint64_t)d[2 * i] | (uint64_t)d[2 * i + 1] << 8, 8);
    uint64_t raw_total = 0;
    LZ4F_preferences_t prefs;
    memset(&prefs, 0, sizeof prefs);
    prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    prefs.frameInfo.blockChecksumFlag = LZ4F_blockChecksumEnabled;
    for (size_t i = 18; i + 4 <= n;) {
        int sec = d[i] % 6;
        uint32_t items = d[i + 1];
        size_t rl = (size_t)d[i + 2] | (size_t)d[i + 3] << 8;
        i += 4;
        if (rl > n - i)
            rl = n - i;
        prefs.frameInfo.contentSize = rl;
        size_t bound = LZ4F_compressFrameBound(rl, &prefs);
        if (len + 16 + bound + 32 > cap)
            break;
        size_t fl = LZ4F_compressFrame(img + len + 16, bound, d + i, rl, &prefs);
        if (LZ4F_isError(fl))
            break;
        memcpy(img + len, TAGS[sec], 4);
        put_le(img + len + 4, items, 4);
        put_le(img + len + 8, rl, 4);
        put_le(img + len + 12, fl, 4);
        len += 16 + fl;
        raw_total += rl;
        i += rl;
    }
    memcpy(img + len, "SHSTEND\n", 8);
    put_le(img + len + 8, raw_total, 8);
    len += 32;
    fix(img, len);
    load(img, len);
    free(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    if (size > 0 && data[0] == 'S') {
        load(data, size);
        uint8_t *c = malloc(size);
        if (!c)
            return 0;
        memcpy(c, data, size);
        fix(c, size);
        load(c, size);
        free(c);
    } else {
        recipe(data, size);
    }
    return 0;
}
