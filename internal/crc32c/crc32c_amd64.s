#include "textflag.h"

// Fold constants for the bit-reflected CRC-32C polynomial: folding a 128-bit lane forward by D
// bits multiplies its low quadword (the higher-degree half, in reflected order) by
// x^(D+32) mod P and its high quadword by x^(D-32) mod P, each bit-reflected and shifted left by
// one (crc32c_test.go's TestFoldConstants derives them). Each 64-byte constant repeats one lane's
// pair four times.

// D = 2048: four 512-bit accumulators, 256 bytes per step.
DATA k2048<>+0(SB)/8, $0xdcb17aa4
DATA k2048<>+8(SB)/8, $0xb9e02b86
DATA k2048<>+16(SB)/8, $0xdcb17aa4
DATA k2048<>+24(SB)/8, $0xb9e02b86
DATA k2048<>+32(SB)/8, $0xdcb17aa4
DATA k2048<>+40(SB)/8, $0xb9e02b86
DATA k2048<>+48(SB)/8, $0xdcb17aa4
DATA k2048<>+56(SB)/8, $0xb9e02b86
GLOBL k2048<>(SB), RODATA, $64

// D = 512: one accumulator into the next 64 bytes.
DATA k512<>+0(SB)/8, $0x740eef02
DATA k512<>+8(SB)/8, $0x9e4addf8
DATA k512<>+16(SB)/8, $0x740eef02
DATA k512<>+24(SB)/8, $0x9e4addf8
DATA k512<>+32(SB)/8, $0x740eef02
DATA k512<>+40(SB)/8, $0x9e4addf8
DATA k512<>+48(SB)/8, $0x740eef02
DATA k512<>+56(SB)/8, $0x9e4addf8
GLOBL k512<>(SB), RODATA, $64

// D = 128: one 128-bit lane into the next 16 bytes.
DATA k128<>+0(SB)/8, $0xf20c0dfe
DATA k128<>+8(SB)/8, $0x14cd00bd6
GLOBL k128<>(SB), RODATA, $16

// FOLD(k, acc, tmp, next): acc = acc.lo*k.lo xor acc.hi*k.hi xor next, per 128-bit lane: acc
// carried forward across the distance k is for, onto the data next that lies there.
#define FOLD(k, acc, tmp, next) \
	VPCLMULQDQ $0x11, k, acc, tmp \
	VPCLMULQDQ $0x00, k, acc, acc \
	VPTERNLOGD $0x96, next, tmp, acc

// func fold(crc uint32, p []byte) uint32
TEXT ·fold(SB), NOSPLIT, $0-36
	MOVL crc+0(FP), AX
	MOVQ p_base+8(FP), SI
	MOVQ p_len+16(FP), CX

	// The first 256 bytes, with crc xored into the first 4.
	VMOVD     AX, X0 // zeroes the rest of Z0
	VMOVDQU64 0(SI), Z1
	VMOVDQU64 64(SI), Z2
	VMOVDQU64 128(SI), Z3
	VMOVDQU64 192(SI), Z4
	VPXORQ    Z0, Z1, Z1
	ADDQ      $256, SI
	SUBQ      $256, CX

	VMOVDQU64 k2048<>(SB), Z0

loop256:
	CMPQ      CX, $256
	JB        reduce4
	VMOVDQU64 0(SI), Z11
	VMOVDQU64 64(SI), Z12
	VMOVDQU64 128(SI), Z13
	VMOVDQU64 192(SI), Z14
	FOLD(Z0, Z1, Z5, Z11)
	FOLD(Z0, Z2, Z6, Z12)
	FOLD(Z0, Z3, Z7, Z13)
	FOLD(Z0, Z4, Z8, Z14)
	ADDQ      $256, SI
	SUBQ      $256, CX
	JMP       loop256

reduce4:
	// Z1 into Z2, into Z3, into Z4: each 64 bytes before the next.
	VMOVDQU64 k512<>(SB), Z0
	FOLD(Z0, Z1, Z5, Z2)
	FOLD(Z0, Z1, Z5, Z3)
	FOLD(Z0, Z1, Z5, Z4)

loop64:
	CMPQ      CX, $64
	JB        reduce1
	VMOVDQU64 0(SI), Z11
	FOLD(Z0, Z1, Z5, Z11)
	ADDQ      $64, SI
	SUBQ      $64, CX
	JMP       loop64

reduce1:
	// Z1's four lanes into one, each 16 bytes before the next.
	VMOVDQU64     k128<>(SB), X0
	VEXTRACTI32X4 $1, Z1, X2
	VEXTRACTI32X4 $2, Z1, X3
	VEXTRACTI32X4 $3, Z1, X4
	FOLD(X0, X1, X5, X2)
	FOLD(X0, X1, X5, X3)
	FOLD(X0, X1, X5, X4)

loop16:
	CMPQ      CX, $16
	JB        done
	VMOVDQU64 0(SI), X11
	FOLD(X0, X1, X5, X11)
	ADDQ      $16, SI
	SUBQ      $16, CX
	JMP       loop16

done:
	// The remainder's own CRC from state 0, with the CRC32 instruction.
	VMOVQ   X1, AX
	VPEXTRQ $1, X1, BX
	VZEROUPPER
	XORL    DX, DX
	CRC32Q  AX, DX
	CRC32Q  BX, DX
	MOVL    DX, ret+32(FP)
	RET
