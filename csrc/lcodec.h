/* celers.core's JSON, base64 and UTF-8 functions (see lcodec.c). */
#ifndef CELERS_LCODEC_H
#define CELERS_LCODEC_H

#include "compat.h"

/* Adds json_encode, json_decode, json_null, json_array_mt, json_max_depth, base64_encode,
 * base64_decode and utf8_valid to the module table at the top of the stack. */
void lcodec_open(lua_State *L);

#endif
