/* placeholder until written */
typedef int shoal_placeholder_;
