/*
 * A fuzz target with bugs planted on purpose, for the tests that prove
 * run-fuzzer.sh fails loudly: libFuzzer's own exit code for what it finds
 * is 77, which meson would record as a skip. An input that starts with
 * "BUG" aborts; one that starts with "LEAK" leaks what it allocated. The
 * seeds in corpus/planted-crash/ and corpus/planted-leak/ are exactly those
 * inputs, so each is found on the first run. Never part of the product.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Volatile, so that the compiler keeps an allocation nobody reads. */
static void *volatile planted_leak;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= 3 && memcmp(data, "BUG", 3) == 0)
		abort();
	if (size >= 4 && memcmp(data, "LEAK", 4) == 0) {
		planted_leak = malloc(size);
		planted_leak = NULL;
	}
	return 0;
}
