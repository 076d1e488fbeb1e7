#include <stdio.h>
int a_hit(void); int b_hit(void); int c_hit(void);
int main(void) { printf("%d %d %d\n", a_hit(), b_hit(), c_hit()); return 0; }
