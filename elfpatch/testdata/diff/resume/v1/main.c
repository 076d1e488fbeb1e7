int loop_banner(void), loop_ahead(void), sw_banner(void), sw_case(void), tail_wrap(int),
    cold_loop(void), cold_changed(void), indirect(int), calls_changed(void), hoisted(void), stack_local(void);
void ends_in_noreturn(void);
int escaped_init(void);

int main(int argc, char **argv) {
	(void)argv;
	switch (argc) {
	case 1: return loop_banner();
	case 2: return loop_ahead();
	case 3: return sw_banner();
	case 4: return sw_case();
	case 5: return tail_wrap(argc);
	case 6: return cold_loop();
	case 7: return cold_changed();
	case 8: return indirect(argc);
	case 9: return hoisted();
	case 10: return stack_local();
	case 11: ends_in_noreturn();
	case 12: return escaped_init();
	}
	return calls_changed();
}
