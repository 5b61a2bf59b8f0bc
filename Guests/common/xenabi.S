/*
 * Swiftlet guests: xen_abi_call64(stub, in[16], out[16]) (xen.h). Loads every general-purpose
 * register except rsp from in[] (index = register number: rax rcx rdx rbx rsp rbp rsi rdi
 * r8..r15), calls the hypercall stub and stores every register into out[]; out[4] is rsp after
 * the call minus rsp before it (0). Used to check that a call changes only rax.
 */
        .text
        .code64
        .globl xen_abi_call64
xen_abi_call64:
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r14
        push %r15
        push %rdx                               /* out */
        push %rdi                               /* stub */
        mov %rsp, 4*8(%rdx)                     /* rsp before the call */
        mov %rsi, %rax
        mov 1*8(%rax), %rcx
        mov 2*8(%rax), %rdx
        mov 3*8(%rax), %rbx
        mov 5*8(%rax), %rbp
        mov 7*8(%rax), %rdi
        mov 8*8(%rax), %r8
        mov 9*8(%rax), %r9
        mov 10*8(%rax), %r10
        mov 11*8(%rax), %r11
        mov 12*8(%rax), %r12
        mov 13*8(%rax), %r13
        mov 14*8(%rax), %r14
        mov 15*8(%rax), %r15
        mov 6*8(%rax), %rsi
        mov 0*8(%rax), %rax
        call *(%rsp)
        push %rax                               /* [rsp] result, [rsp+8] stub, [rsp+16] out */
        mov 16(%rsp), %rax
        mov %rcx, 1*8(%rax)
        mov %rdx, 2*8(%rax)
        mov %rbx, 3*8(%rax)
        lea 8(%rsp), %rcx                       /* rsp right after the call */
        sub 4*8(%rax), %rcx
        mov %rcx, 4*8(%rax)
        mov %rbp, 5*8(%rax)
        mov %rsi, 6*8(%rax)
        mov %rdi, 7*8(%rax)
        mov %r8, 8*8(%rax)
        mov %r9, 9*8(%rax)
        mov %r10, 10*8(%rax)
        mov %r11, 11*8(%rax)
        mov %r12, 12*8(%rax)
        mov %r13, 13*8(%rax)
        mov %r14, 14*8(%rax)
        mov %r15, 15*8(%rax)
        pop %rcx
        mov %rcx, 0*8(%rax)
        add $16, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        ret

        .section .note.GNU-stack, "", @progbits
