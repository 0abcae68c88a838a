/* Peak-memory probe for `worker bench` and other processes: preloaded, it reads /proc/self/statm
 * every 3 ms, and at each new highest RSS keeps glibc's heap figures (mallinfo2) and the [heap]
 * mapping's RSS; at exit it prints them. Free heap that is resident at the peak is what the
 * allocator kept, not what the program holds (docs/benchmarks.md, twentieth session).
 *
 *   gcc -O2 -shared -fPIC -o /tmp/peak_heap_probe.so scripts/peak_heap_probe.c -lpthread
 *   LD_PRELOAD=/tmp/peak_heap_probe.so target/release/worker bench --model M --batch-size 64
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
static struct mallinfo2 best; static long best_rss; static long heap_rss_kb;
static long heap_rss(void){FILE*f=fopen("/proc/self/smaps","r");char line[512];int in=0;long kb=0;if(!f)return 0;while(fgets(line,sizeof line,f)){if(strstr(line,"[heap]"))in=1;else if(in&&!strncmp(line,"Rss:",4)){sscanf(line+4,"%ld",&kb);break;}}fclose(f);return kb;}
static void *poll_loop(void *arg) {
  for (;;) {
    FILE *f = fopen("/proc/self/statm", "r"); long size, rss = 0;
    if (f) { if (fscanf(f, "%ld %ld", &size, &rss) != 2) rss = 0; fclose(f); }
    if (rss > best_rss) { best_rss = rss; best = mallinfo2(); heap_rss_kb = heap_rss(); }
    usleep(3000);
  }
  return 0;
}
static void report(void) {
  double M = 1048576.0;
  fprintf(stderr, "probe: peak rss %.1f MiB: heap arena %.1f, in use %.1f, free %.1f, mmapped %.1f (%zu chunks), top releasable %.1f, [heap] rss %.1f\n",
    best_rss * 4096 / M, best.arena / M, best.uordblks / M, best.fordblks / M, best.hblkhd / M, best.hblks, best.keepcost / M, heap_rss_kb / 1024.0);
}
__attribute__((constructor)) static void start(void) {
  pthread_t t; pthread_create(&t, 0, poll_loop, 0); pthread_detach(t); atexit(report);
}
