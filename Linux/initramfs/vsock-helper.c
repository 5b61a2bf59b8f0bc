/*
 * vsock-helper: the test initramfs's AF_VSOCK client and server (busybox has none).
 *   vsock-helper connect PORT TEXT   connects to the host (CID 2) port PORT, sends TEXT and prints
 *                                    "vsock-helper: reply <what came back>"
 *   vsock-helper listen PORT         accepts one connection on PORT, prints
 *                                    "vsock-helper: got <what came>", answers "pong from linux"
 */
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fail(const char *what)
{
    printf("vsock-helper: %s failed\n", what);
    fflush(stdout);
    return 1;
}

static void print_text(const char *label, char *buffer, ssize_t n)
{
    buffer[n > 0 ? n : 0] = 0;
    printf("vsock-helper: %s %s\n", label, buffer);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 3) return fail("usage");
    struct sockaddr_vm address;
    memset(&address, 0, sizeof address);
    address.svm_family = AF_VSOCK;
    address.svm_port = (unsigned)atoi(argv[2]);
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0) return fail("socket");
    char buffer[256];
    if (strcmp(argv[1], "connect") == 0 && argc > 3) {
        address.svm_cid = VMADDR_CID_HOST;
        if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) return fail("connect");
        if (write(fd, argv[3], strlen(argv[3])) < 0) return fail("write");
        print_text("reply", buffer, read(fd, buffer, sizeof buffer - 1));
    } else if (strcmp(argv[1], "listen") == 0) {
        address.svm_cid = VMADDR_CID_ANY;
        if (bind(fd, (struct sockaddr *)&address, sizeof address) != 0 || listen(fd, 1) != 0) return fail("listen");
        int connection = accept(fd, NULL, NULL);
        if (connection < 0) return fail("accept");
        print_text("got", buffer, read(connection, buffer, sizeof buffer - 1));
        if (write(connection, "pong from linux", 15) < 0) return fail("write");
        close(connection);
    } else {
        return fail("usage");
    }
    close(fd);
    return 0;
}
