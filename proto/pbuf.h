/*
 * pbuf.h -- protobuf-c allocators (STYLE §5: every allocation goes through
 * mem_alloc, so tests can fail it).
 *
 * pbuf_allocator(): a ProtobufCAllocator on mem_alloc/mem_free.
 * pbuf_arena: a bump allocator for decoding or building one frame. A frame
 * of hundreds of small messages costs hundreds of malloc/free pairs with the
 * plain allocator; with an arena it is a few chunks, released together by
 * pbuf_arena_reset. Free through the arena's allocator is a no-op.
 */
#ifndef SHOAL_PROTO_PBUF_H
#define SHOAL_PROTO_PBUF_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

ProtobufCAllocator *pbuf_allocator(void);

typedef struct pbuf_chunk pbuf_chunk;

typedef struct pbuf_arena {
    ProtobufCAllocator alloc; /* hand &a->alloc to protobuf-c */
    pbuf_chunk *chunks;       /* newest first */
    size_t chunk_bytes;       /* size of the next regular chunk */
    size_t used;              /* bytes handed out since the last reset */
} pbuf_arena;

/* chunk_bytes: size of each chunk (larger requests get their own chunk). */
void pbuf_arena_init(pbuf_arena *a, size_t chunk_bytes);

/* Forget every allocation; keeps the first chunk for reuse. */
void pbuf_arena_reset(pbuf_arena *a);

/* Free every chunk. */
void pbuf_arena_fini(pbuf_arena *a);

/* Allocate len bytes (8-byte aligned) from the arena; NULL on ENOMEM. */
void *pbuf_arena_alloc(pbuf_arena *a, size_t len);

#endif
