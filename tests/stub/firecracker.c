/*
 * A stand-in for firecracker in tests: it does nothing but wait to be
 * killed. What the helper checks is its executable name (this file is
 * built as "firecracker" and, for negative tests, under other names) and
 * its argv, so it accepts and ignores any arguments. Linked statically so
 * it also runs inside a jailer-style chroot with nothing else in it.
 */
#include <signal.h>
#include <unistd.h>

int main(void)
{
	for (;;)
		pause();
}
