#include <stdio.h>
int a_hit(void); int b_hit(void);
int main(void) { printf("%d %d\n", a_hit(), b_hit()); return 0; }
