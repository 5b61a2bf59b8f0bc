import FoundationEssentials
import JSON

/// A request body or configuration file checked before the toolchain's `JSONDecoder` turns it
/// into values: the syntax by Swiftlet's strict reader (RFC 8259, as Firecracker's serde_json:
/// no trailing commas, errors with line and column), then every member against `fields`, so an
/// unknown or duplicate field, a wrong type or a fraction where an integer belongs is named.
protocol StrictBody: Decodable, Sendable {
    /// Every member the object may have and its shape.
    static var fields: [String: FieldShape] { get }
}

enum FieldShape: Sendable {
    case integer, boolean, string
    case object(any StrictBody.Type)
    case arrayOf(any StrictBody.Type)

    var name: String {
        switch self {
        case .integer: "an integer"
        case .boolean: "a boolean (true or false)"
        case .string: "a string"
        case .object: "an object"
        case .arrayOf: "an array of objects"
        }
    }
}

/// A body that could not be decoded, with a message that names the field and the problem.
struct BodyError: Error, Equatable, CustomStringConvertible {
    let message: String
    var description: String { message }
}

enum StrictJSON {
    /// Decodes `T` from `bytes`, refusing malformed JSON, unknown and duplicate fields, wrong
    /// types and missing required fields with a one-line message.
    static func decode<T: StrictBody>(_ type: T.Type, from bytes: [UInt8]) throws(BodyError) -> T {
        let document: JSONValue
        do { document = try JSONValue.parse(bytes) } catch {
            throw BodyError(message: "the body is not valid JSON: \(error)")
        }
        try check(document, against: T.self, path: "")
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw BodyError(message: describe(error))
        } catch {
            throw BodyError(message: "\(error)")
        }
    }

    /// Walks an object against its shape. null is left to the typed pass (it is accepted for
    /// optional fields and refused, naming the field, for required ones).
    static func check(_ value: JSONValue, against type: any StrictBody.Type, path: String) throws(BodyError) {
        guard case let .object(members) = value else {
            throw BodyError(message: "\(path.isEmpty ? "the body" : "`\(path)`"): expected an object, found \(value.kindDescription)")
        }
        let fields = type.fields
        var seen: Set<String> = []
        for member in members {
            let name = path.isEmpty ? member.key : "\(path).\(member.key)"
            guard let shape = fields[member.key] else {
                let expected = fields.keys.sorted().map { "`\($0)`" }.joined(separator: ", ")
                throw BodyError(message: "unknown field `\(name)`, expected one of \(expected)")
            }
            guard seen.insert(member.key).inserted else { throw BodyError(message: "duplicate field `\(name)`") }
            switch (shape, member.value) {
            case (_, .null): continue
            case (.integer, .number(let text)):
                guard Int(text) != nil else {
                    let why = text.contains(where: { ".eE".contains($0) }) ? "a whole number is needed" : "out of range"
                    throw BodyError(message: "`\(name)`: \(text) is not an integer (\(why))")
                }
            case (.boolean, .bool), (.string, .string): continue
            case let (.object(nested), nestedValue): try check(nestedValue, against: nested, path: name)
            case let (.arrayOf(nested), .array(elements)):
                for (index, element) in elements.enumerated() { try check(element, against: nested, path: "\(name)[\(index)]") }
            default:
                throw BodyError(message: "`\(name)`: expected \(shape.name), found \(member.value.kindDescription)")
            }
        }
    }

    /// "`machine-config.vcpu_count`" for a coding path.
    static func fieldName(_ path: [any CodingKey]) -> String {
        let name = path.map(\.stringValue).joined(separator: ".")
        return name.isEmpty ? "the body" : "`\(name)`"
    }

    /// What is left after the checks above: a missing required field, or null where one is needed.
    static func describe(_ error: DecodingError) -> String {
        switch error {
        case let .valueNotFound(_, context):
            return "\(fieldName(context.codingPath)): a value is needed, found null"
        case let .keyNotFound(key, context):
            return "missing field `\(key.stringValue)`" + (context.codingPath.isEmpty ? "" : " in \(fieldName(context.codingPath))")
        case let .typeMismatch(_, context), let .dataCorrupted(context):
            return "\(fieldName(context.codingPath)): \(context.debugDescription)"
        @unknown default:
            return "\(error)"
        }
    }
}

/// Encodes `value` as compact JSON with sorted keys (stable output for clients and tests).
func encodeJSON<T: Encodable>(_ value: T, pretty: Bool = false) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
    return (try? Array(encoder.encode(value))) ?? Array("{}".utf8)
}
