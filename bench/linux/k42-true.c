/* k42-true: does nothing and exits 0. The Linux benchmark builds it
 * twice, static (gcc -static) and dynamically linked (plain gcc, the
 * host's ld.so and libc), and times fork + exec + wait of each: the
 * cost of dynamic linking at exec, in the guest and on host Linux. */
int main(void)
{
	return 0;
}
