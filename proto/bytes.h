/*
 * bytes.h -- little-endian load/store for disk and wire fields. Pure, inline,
 * alignment-free (memcpy), so decoders can use them on any offset.
 */
#ifndef SHOAL_PROTO_BYTES_H
#define SHOAL_PROTO_BYTES_H

#include <stdint.h>
#include <string.h>

static inline void
put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t) v;
    p[1] = (uint8_t) (v >> 8);
}

static inline void
put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static inline void
put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static inline uint16_t
get_u16(const uint8_t *p)
{
    return (uint16_t) (p[0] | (uint16_t) (p[1] << 8));
}

static inline uint32_t
get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline uint64_t
get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

#endif
