import KVM
import X86

/// `--cpu-template`: a Firecracker-format CPU template (X86's `CPUTemplate`), named here so that
/// the CLI needs only VMM.
public typealias CPUTemplate = X86.CPUTemplate
public typealias CPUTemplateError = X86.CPUTemplateError

extension Machine {
    /// The CPUID table every vCPU starts from: `supported` (KVM's list, Xen leaves included) with
    /// Swiftlet's base bits, then the template; the per-vCPU fields come later
    /// (`CPUIDTemplate.entries`). The template's `kvm_capabilities` are checked first.
    static func templatedCPUID(_ supported: [CPUIDEntry], template: CPUTemplate,
                               system: KVMSystem) throws(CPUTemplateError) -> [CPUIDEntry] {
        try template.checkCapabilities { system.check(capabilityNumber: $0) > 0 }
        return try template.apply(to: CPUIDTemplate.base(from: supported))
    }

    /// The template's MSR modifiers on one vCPU, after Swiftlet's boot MSRs: each MSR is read
    /// (`KVM_GET_MSRS`), changed and written back (`KVM_SET_MSRS`); an MSR KVM cannot read or
    /// will not take is an error naming the modifier. One MSR per ioctl, so the error is exact.
    static func applyMSRModifiers(of template: CPUTemplate, to vcpu: VCPU) throws(MachineError) {
        for address in template.msrAddresses {
            let current: [UInt64]
            do { current = try vcpu.msrs([address]) } catch { throw .kvm(error) }
            guard let value = current.first else {
                throw .cpuTemplate(.msrNotSupported(template.location(ofMSR: address), address: address))
            }
            let new = template.msrValue(address, current: value)
            do { try vcpu.setMSRs([(address, new)]) } catch {
                throw .cpuTemplate(.msrRefused(template.location(ofMSR: address), address: address, value: new,
                                               vcpu: vcpu.id, detail: error.description))
            }
        }
    }
}
